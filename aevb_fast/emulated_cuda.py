"""Development only: ``aevb_fast``'s operators running the CUDA kernels' code
(``csrc/cuda/*.cu``) on CPU tensors, under an emulation of the CUDA execution model
(``csrc/emulation/``: grids, blocks, warps, ``__syncthreads``, warp shuffles, shared memory),
compiled with AddressSanitizer and UBSan.

It shows the kernels' logic, indexing, reductions, the RNG's mapping and memory safety (an
out-of-bounds or misaligned access aborts the process with a report). It cannot show speed, the
GPU's memory model (every access is sequentially consistent here) or the driver.

Build it with ``AEVB_FAST_EMULATED_CUDA=1 pip install --no-build-isolation -e .`` and run Python
with the sanitizer runtime preloaded (``aevb_fast._sanitizers.environment()``; the test suite
does this by itself). Users never need it.
"""

from __future__ import annotations

import contextlib
import importlib.util

from . import _sanitizers, ops
from .ops import OperatorLibrary

if importlib.util.find_spec("aevb_fast._emulated_cuda") is None:
    raise ImportError(
        "aevb_fast.emulated_cuda was not built; build it with "
        "`AEVB_FAST_EMULATED_CUDA=1 pip install --no-build-isolation -e .`"
    )
if not _sanitizers.runtime_loaded():
    # Loading the module without the runtime first would abort the process.
    raise ImportError(
        "aevb_fast.emulated_cuda is built with AddressSanitizer, whose runtime must be preloaded: "
        "run Python with the environment that aevb_fast._sanitizers.environment() returns (LD_PRELOAD "
        "of libasan and libstdc++, ASAN_OPTIONS=detect_leaks=0); pytest does this by itself"
    )

from . import _emulated_cuda  # noqa: E402  registers torch.ops.aevb_fast_emulated

__all__ = [*ops.__all__, "max_grid_blocks", "record_launches"]

_library = OperatorLibrary("aevb_fast_emulated", _emulated_cuda, __name__)
globals().update({name: getattr(_library, name) for name in ops.__all__})  # the same functions as aevb_fast's


@contextlib.contextmanager
def max_grid_blocks(blocks: int):
    """Launches inside use at most ``blocks`` blocks (a GPU's limit is far larger), so that the
    kernels' grid-stride loops take several passes over small tensors."""
    previous = _emulated_cuda.max_grid_blocks()
    _emulated_cuda.set_max_grid_blocks(blocks)
    try:
        yield
    finally:
        _emulated_cuda.set_max_grid_blocks(previous)


@contextlib.contextmanager
def record_launches():
    """Yields a list that, when the block ends, holds the name of every kernel launched inside
    (with its template arguments, e.g. ``aevb_fast::cuda::row_sum_kernel<1, 32, ...>``)."""
    names: list[str] = []
    _emulated_cuda.set_recording_launches(True)
    try:
        yield names
    finally:
        names.extend(_emulated_cuda.launch_log())
        _emulated_cuda.set_recording_launches(False)
