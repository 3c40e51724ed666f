"""The sanitizer runtime that the CUDA emulation's module (built with AddressSanitizer) needs
loaded first in the process: used by ``aevb_fast.emulated_cuda`` and the test suite."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess

LEAK_CHECKS_OFF = "detect_leaks=0"  # Python and torch keep memory until exit by design
UBSAN_FATAL = "print_stacktrace=1:halt_on_error=1"


def runtime_loaded() -> bool:
    """Whether AddressSanitizer's runtime is in this process (it must be preloaded)."""
    try:
        with open("/proc/self/maps") as maps:
            return "libasan" in maps.read()
    except OSError:
        return False


def _linked_runtime() -> str | None:
    """The libasan that the built module links (ldd), so that a compiler other than the one that
    built it cannot hand over a mismatched runtime."""
    spec = importlib.util.find_spec("aevb_fast._emulated_cuda")
    if spec is None or spec.origin is None or shutil.which("ldd") is None:
        return None
    listing = subprocess.run(["ldd", spec.origin], capture_output=True, text=True).stdout
    match = re.search(r"libasan\.so\S* => (\S+)", listing)
    return match[1] if match else None


def _compiler_library(name: str, env: dict[str, str]) -> str:
    compiler = shutil.which(env.get("CXX", "g++")) or shutil.which("c++") or "g++"
    path = subprocess.run(
        [compiler, f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not os.path.isabs(path):
        raise RuntimeError(f"aevb_fast: {compiler} does not know where {name} is ({path!r})")
    return os.path.realpath(path)


def _prepend(first: list[str], rest: str, separator: str) -> str:
    parts = first + [p for p in rest.split(separator) if p and p not in first]
    return separator.join(parts)


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the ASan runtime preloaded (and
    libstdc++: ASan's C++ exception interceptor needs it loaded when ASan starts, and Python
    does not link it), leak checks off and UBSan errors fatal. Applying it twice changes nothing."""
    env = dict(os.environ if base is None else base)
    runtime = _linked_runtime() or _compiler_library("libasan.so", env)
    libraries = [runtime, _compiler_library("libstdc++.so.6", env)]
    env["LD_PRELOAD"] = _prepend(libraries, env.get("LD_PRELOAD", ""), " ")
    env["ASAN_OPTIONS"] = _prepend([LEAK_CHECKS_OFF], env.get("ASAN_OPTIONS", ""), ":")
    env["UBSAN_OPTIONS"] = _prepend(UBSAN_FATAL.split(":"), env.get("UBSAN_OPTIONS", ""), ":")
    return env
