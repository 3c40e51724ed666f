"""The CUDA emulation itself (csrc/emulation/): barriers, shuffles and shared memory work, the
mistakes that hang or corrupt a GPU are reported, and the sanitizers are really on."""

import random
import subprocess
import sys

import pytest

from testing import require_device


@pytest.fixture(scope="module")
def emulation():
    require_device("emulated_cuda")
    import aevb_fast.emulated_cuda

    return aevb_fast.emulated_cuda


def test_barriers_shuffles_and_shared_memory(emulation):
    assert emulation._emulated_cuda.self_test("block_sum") == [sum(range(256))] * 3


def test_a_shuffle_that_part_of_a_warp_skips_is_an_error(emulation):
    with pytest.raises(RuntimeError, match="shuffle in warp 0 was reached by 16 of its 32 lanes"):
        emulation._emulated_cuda.self_test("partial_warp_shuffle")


def test_a_barrier_waits_for_the_threads_that_have_not_exited(emulation):
    # As on sm_70 and later: thread 0 returned early, the other 63 pass the barrier.
    out = emulation._emulated_cuda.self_test("early_exit_barrier")
    assert out[:64] == [0] + [1] * 63 and out[64:] == [0] + [2] * 63


def test_a_deadlock_between_a_barrier_and_a_shuffle_is_an_error(emulation):
    with pytest.raises(
        RuntimeError,
        match=r"shuffle in warp 0 was reached by 31 of its 32 lanes \(0 exited the kernel, 1 wait at __syncthreads\)",
    ):
        emulation._emulated_cuda.self_test("barrier_shuffle_deadlock")


def test_the_grid_limit_is_a_setting(emulation):
    with emulation.max_grid_blocks(2):
        with pytest.raises(RuntimeError, match="a launch of 3 blocks; the grid limit is 2"):
            emulation._emulated_cuda.self_test("block_sum")
    assert emulation._emulated_cuda.self_test("block_sum") == [sum(range(256))] * 3


@pytest.mark.parametrize(
    "test, report",
    [("read_past_end", "heap-buffer-overflow"), ("misaligned_load", "misaligned address")],
)
def test_sanitizers_stop_a_bad_access(emulation, test, report):
    # In a child process: the sanitizer ends the process it finds the error in.
    from aevb_fast import _sanitizers

    code = f"import aevb_fast.emulated_cuda as e; e._emulated_cuda.self_test({test!r}); print('ran on')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_sanitizers.environment(), timeout=120
    )
    assert result.returncode != 0 and "ran on" not in result.stdout
    assert report in result.stderr, result.stderr[-2000:]


def test_the_kernels_divider_divides_as_python_does(emulation):
    """csrc/cuda/divider.cuh: the multiply-and-shift path below 2^31 and the division above it, at
    the edges of each (n and d around 2^31, d = 1 and powers of two) and at random."""
    from aevb_fast import _emulated_cuda

    rng = random.Random(0)
    edges = [1, 2, 3, 7, 20, 64, 784, 1001, 4097, 2**16 + 1, 2**30, 2**30 + 1, 2**31 - 1, 2**31, 2**31 + 1, 2**40 + 3]
    for d in edges + [rng.randrange(1, 2**31) for _ in range(40)]:
        n = {0, 1, d - 1, d, d + 1, 2 * d - 1, 2 * d, 2**31 - 2, 2**31 - 1, 2**31, 2**32 + 5, 2**40, 2**62}
        n |= {rng.randrange(0, 2**31) for _ in range(200)} | {rng.randrange(0, 2**63) for _ in range(20)}
        n = sorted(n)
        assert _emulated_cuda.divide(d, n) == [v // d for v in n], d
