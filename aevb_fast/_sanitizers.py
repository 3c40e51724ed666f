"""The sanitizer runtime that the CUDA emulation's module (built with AddressSanitizer) needs
loaded first in the process: used by ``aevb_fast.emulated_cuda`` and the test suite."""

from __future__ import annotations

import os
import shutil
import subprocess


def runtime_loaded() -> bool:
    """Whether AddressSanitizer's runtime is in this process (it must be preloaded)."""
    try:
        with open("/proc/self/maps") as maps:
            return "libasan" in maps.read()
    except OSError:
        return False


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the ASan runtime preloaded, leak
    checks off (Python and torch keep memory until exit by design) and UBSan errors fatal."""
    env = dict(os.environ if base is None else base)
    compiler = shutil.which(env.get("CXX", "g++")) or shutil.which("c++") or "g++"
    # libstdc++ too: ASan's C++ exception interceptor needs it loaded when ASan starts, and
    # Python itself does not link it (torch loads it later).
    libraries = []
    for name in ("libasan.so", "libstdc++.so.6"):
        path = subprocess.run(
            [compiler, f"-print-file-name={name}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if not os.path.isabs(path):
            raise RuntimeError(f"aevb_fast: {compiler} does not know where {name} is ({path!r})")
        libraries.append(os.path.realpath(path))
    env["LD_PRELOAD"] = " ".join(libraries + [env.get("LD_PRELOAD", "")]).strip()
    env["ASAN_OPTIONS"] = ":".join(
        p for p in ("detect_leaks=0", env.get("ASAN_OPTIONS", "")) if p
    )
    env["UBSAN_OPTIONS"] = ":".join(
        p for p in ("print_stacktrace=1:halt_on_error=1", env.get("UBSAN_OPTIONS", "")) if p
    )
    return env
