"""Peak memory of one call, measured the same way for every provider.

- CUDA: the caching allocator's own peak (``torch.cuda.max_memory_allocated``) above what was
  allocated before the call.
- CPU: torch has no allocator statistics there, so the call runs in a fresh Python process
  whose glibc hands every allocation of 64 KiB or more straight to ``mmap`` (and back to the
  system when freed: ``mallopt(M_MMAP_THRESHOLD)``, which also stops glibc raising that
  threshold), and a thread samples the process's resident anonymous memory (``/proc/self/statm``) while
  the call runs. The peak is the highest sample minus the resident memory just before the call,
  after a warm-up call (compilation, first-touch of library buffers), highest of three calls (the
  sampler shares the cores with the call and can be descheduled through a short peak). Tensors
  below 64 KiB can be missed; the tensors that matter here are tens of MB and live for
  milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from typing import Callable

import torch

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 1024


def _resident_bytes() -> int:
    """Resident anonymous memory: resident minus shared (the pages of files, such as the code of
    libraries first run during the call, which are not allocations)."""
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


def map_large_allocations() -> bool:
    """Every allocation of 64 KiB or more its own mmap, returned to the system when freed."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def sampled_peak_bytes(call: Callable[[], None], reset: Callable[[], None] = lambda: None,
                       repeats: int = 3) -> int:
    """The resident memory that call adds at its peak, sampled by a thread (CPU): the highest
    of `repeats` calls, each after `reset` (which frees what the previous call left, such as
    gradients, so that every call starts from the same level)."""
    peaks = []
    for _ in range(repeats):
        reset()
        peaks.append(_sampled_peak_once(call))
    return max(peaks)


def _sampled_peak_once(call: Callable[[], None]) -> int:
    gc.collect()
    base = _resident_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        call()
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], _resident_bytes())
    return peak[0] - base


def cuda_peak_bytes(call: Callable[[], None]) -> int:
    torch.cuda.synchronize()
    gc.collect()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def peak_bytes_in_fresh_process(module: str, spec: dict) -> int:
    """Runs ``python -m module --measure-memory JSON`` (the module's own entry point builds the
    call from spec, warms it up and prints its peak bytes) and returns what it printed."""
    # glibc's allocator, as mallopt assumes: no preloaded one (the test suite preloads
    # AddressSanitizer, whose quarantine keeps freed memory resident).
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
    result = subprocess.run([sys.executable, "-m", module, "--measure-memory", json.dumps(spec)],
                            capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {spec} failed:\n{result.stderr[-2000:]}")
    return int(result.stdout.strip().splitlines()[-1])


def measure_memory_main(measure: Callable[[dict], int], command: str) -> None:
    """The entry point of a suite's module run by peak_bytes_in_fresh_process."""
    if len(sys.argv) == 3 and sys.argv[1] == "--measure-memory":
        print(measure(json.loads(sys.argv[2])))
    else:
        sys.exit(f"usage: python -m <suite module> --measure-memory JSON (internal; run `{command}`)")


# The lines torch's profiler (Kineto) writes to stderr at each start and stop, such as
# "USDT:2026-12-04 17:51:47 4096:4096 SyncActivityProfilerHandler.cpp:52] profiler_start": markers
# for tracing tools, logged at a level above its errors (so KINETO_LOG_LEVEL would hide its errors too).
PROFILER_MARKER = re.compile(r"^(USDT|STAGE):\S+ \S+ \d+:\d+ \S+\] ")


@contextlib.contextmanager
def profiler_markers_dropped():
    """Runs the block with stderr (the file descriptor, where the C++ code writes) set aside, then
    writes back every line of it but the profiler's markers: its errors and warnings still show."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not PROFILER_MARKER.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def profiled_peak_bytes(call: Callable[[], None]) -> int:
    """The peak of the tensor memory call allocates (CPU or GPU), from the profiler's records: each
    op's own allocations less its frees, in the order the ops start (deterministic, unlike a
    sampled resident size; an op's transient buffers freed within it are not seen). Free what an
    earlier call left before: a tensor allocated before the profiler starts and freed while it
    records cannot be sized (the profiler warns)."""
    with profiler_markers_dropped(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                            profile_memory=True) as prof:
        call()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak
