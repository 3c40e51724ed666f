"""The CUDA emulation's module is built with AddressSanitizer, whose runtime must be loaded
before anything else: when the module is built and the runtime is missing, pytest restarts
itself once with it preloaded (aevb_fast._sanitizers.environment()), so `pytest` just works."""

import importlib.util
import os
import sys

from aevb_fast import _sanitizers

_MARK = "AEVB_FAST_SANITIZER_RESTART"


def pytest_configure(config):
    if importlib.util.find_spec("aevb_fast._emulated_cuda") is None or _sanitizers.runtime_loaded():
        return
    if os.environ.get(_MARK):
        raise RuntimeError("aevb_fast tests: restarted with LD_PRELOAD=libasan but ASan is still not loaded")
    env = _sanitizers.environment()
    env[_MARK] = "1"
    # Give the terminal back before exec, or the new process would write into pytest's capture.
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
