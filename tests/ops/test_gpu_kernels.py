"""The CUDA kernels (csrc/cuda/) against the CPU kernels, path by path: on a GPU ("cuda") and on
this CPU under the CUDA emulation ("emulated_cuda"). Every op and dtype on the packed (128-bit)
and one-element paths (misaligned views made after the leaves, odd column counts), warp rows
and block rows, given and drawn noise with L = 1 and 5, x broadcast over samples, empty inputs,
grid-stride loops of several passes; the kernels that ran are checked by name, and the noise
is the CPU's bit for bit."""

import importlib
import math
import os
import re

import pytest
import torch

from aevb_fast.ops import FAMILIES
from testing import (
    DTYPES,
    GPU_KERNELS,
    TOLERANCES,
    functions,
    op_library,
    rand,
    randn,
    require_device,
    run_with_grads,
    tensor_device,
)

LAYOUTS = ["packed", "one-element"]
# (rows, cols): warp rows packed, warp rows with an odd count (one element at a time), block
# rows (>= 4096 columns) packed, block rows with an odd count, rows of at most 16 packs that
# share a warp (8 or 16 threads a row; 37 rows leave the last warp part empty), and short
# unpacked rows: of 1 element (a thread a row), of up to 8 and up to 16 (8 and 16 threads).
SHAPES = [(37, 784), (5, 33), (3, 5000), (2, 4097), (37, 64), (13, 20), (70, 1), (37, 7), (37, 13)]
WARP, BLOCK = 32, 256  # threads per row: csrc/cuda/utils.cuh's kWarp, kThreads
BLOCK_ROW_MIN = 4096


def kernel_paths() -> dict:
    """Every family's calls (op_tester.KernelPaths), read from the KERNEL_PATHS of its test file,
    tests/ops/test_<family>.py for each family of aevb_fast.ops.FAMILIES: a new family's spec
    brings its CUDA-path checks along."""
    paths = {}
    for family in FAMILIES:
        paths.update(getattr(importlib.import_module(f"test_{family.name}"), "KERNEL_PATHS", {}))
    return paths


OPS = kernel_paths()
OP_SAMPLES = [(op, L) for op, case in OPS.items() for L in case.samples]


@pytest.fixture(params=GPU_KERNELS)
def device(request):
    require_device(request.param)
    return request.param


def case_inputs(op, shape, samples):
    return OPS[op].inputs(shape, samples)


def misaligned(t):
    """The same values, contiguous, one element past an aligned address (differentiable, so it
    can be made from a leaf): no 128-bit pack fits, the one-element path runs."""
    flat = t.new_empty(t.numel() + 1)
    flat[1:] = t.flatten()
    return flat[1:].view(t.shape)


def run(device, op, tensors, layout):
    """Outputs and input gradients of op on device, the inputs made misaligned after the leaves."""

    def call(*leaves):
        args = [misaligned(t) for t in leaves] if layout == "one-element" else leaves
        return OPS[op].call(functions(device), *args)

    outs, grads, _ = run_with_grads(call, [t.to(tensor_device(device)) for t in tensors])
    return [t.cpu() for t in outs + grads if t is not None]


def launched_kernels(device, fn):
    """The names (with template arguments) of the aevb_fast kernels that fn launches; None under
    compute-sanitizer, which holds the profiling interface the profiler needs (the paths are checked
    in the plain run; the sanitizer's run is for the memory accesses)."""
    if device == "cuda" and os.environ.get("AEVB_FAST_UNDER_SANITIZER") == "1":
        fn()
        return None
    if device == "emulated_cuda":
        with functions(device).record_launches() as names:
            fn()
        return names
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in profile.events() if "aevb_fast::cuda::" in e.name]


def assert_paths(names, dtype, cols, layout):
    """Every row sum and elementwise kernel took the path that the shape and layout call for."""
    pack = 16 // torch.empty((), dtype=dtype).element_size()
    vec = pack if layout == "packed" and cols % pack == 0 else 1
    if cols >= BLOCK_ROW_MIN:
        row_threads = BLOCK
    elif vec == 1 and cols == 1:
        row_threads = 1
    elif cols <= 16 * vec:  # at most 16 packs, or 16 elements one at a time
        row_threads = 8 if cols <= 8 * vec else 16
    else:
        row_threads = WARP
    assert any(re.search(r"(row_sum|elementwise)_kernel<", n) for n in names), (
        f"no row-sum or elementwise kernel in {names}"
    )
    for name in names:
        if m := re.search(r"row_sum_kernel<(\d+), (\d+),", name):
            assert (int(m[1]), int(m[2])) == (vec, row_threads), name
        elif m := re.search(r"elementwise_kernel<(\d+),", name):
            assert int(m[1]) == vec, name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op, samples", OP_SAMPLES)
def test_matches_the_cpu_kernels_on_every_path(device, op, samples, shape, layout, dtype):
    tensors = [t.to(dtype) for t in case_inputs(op, shape, samples)]
    ours = []
    names = launched_kernels(device, lambda: ours.extend(run(device, op, tensors, layout)))
    cpu = run("cpu", op, tensors, layout)
    for a, b in zip(ours, cpu, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCES[dtype])
    if names is not None:
        assert_paths(names, dtype, shape[-1], layout)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0)], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_empty(device, op, shape):
    tensors = case_inputs(op, shape, min(2, max(OPS[op].samples)))
    for a, b in zip(run(device, op, tensors, "packed"), run("cpu", op, tensors, "packed"), strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, equal_nan=True)  # the mean of nothing is NaN


def test_grid_stride_loops_take_several_passes(device):
    if device != "emulated_cuda":
        pytest.skip("the grid limit is a setting of the emulation; on a GPU the >2^31 test does it")
    with functions(device).max_grid_blocks(2):
        for op, samples in OP_SAMPLES:
            for shape in [(37, 784), (3, 5000), (37, 64)]:
                tensors = case_inputs(op, shape, samples)
                ours = run(device, op, tensors, "packed")
                for a, b in zip(ours, run("cpu", op, tensors, "packed"), strict=True):
                    torch.testing.assert_close(a, b, **TOLERANCES[torch.float64])
        test_drawn_noise_is_the_cpus_bit_for_bit(device, torch.float32, (37, 784), 5, "packed")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(3, 1001), (64, 20), (1, 1), (37, 784), (2, 4097)], ids=str)
@pytest.mark.parametrize("num_samples", [1, 5])
def test_drawn_noise_is_the_cpus_bit_for_bit(device, dtype, shape, num_samples, layout):
    # mu = 0, logvar = 0: z = 0 + 1 * eps is eps exactly, fused multiply-add or not. With
    # grad_z = 1 the backward's grad_logvar is half the sum over samples of the regenerated eps.
    seed = torch.tensor([123456789, 42])

    def draw(dev, library, misalign):
        mu = torch.zeros(shape, dtype=dtype, device=dev, requires_grad=True)
        logvar = torch.zeros(shape, dtype=dtype, device=dev, requires_grad=True)
        m, v = (misaligned(mu), misaligned(logvar)) if misalign else (mu, logvar)
        z = library.reparameterize(m, v, None, seed.to(dev), num_samples)
        z.backward(torch.ones_like(z))
        return z.detach().cpu(), logvar.grad.cpu()

    ours = []
    names = launched_kernels(
        device,
        lambda: ours.extend(draw(tensor_device(device), op_library(device), layout == "one-element")),
    )
    z_cpu, grad_cpu = draw("cpu", torch.ops.aevb_fast, False)
    assert torch.equal(ours[0], z_cpu), "the forward's noise differs from the CPU's"
    assert torch.equal(ours[1], grad_cpu), "the backward's regenerated noise differs from the CPU's"
    if names is None:
        return
    # The kernels' GroupLayout: packed when the runs of 4 are (every sample's group is whole
    # counters, whatever params % 64), else any layout.
    packed = layout == "packed" and shape[-1] % 4 == 0
    group_layout = "kPacked" if packed else "kAnyLayout"
    value = ("kPacked", "kAnyLayout").index(group_layout)
    dtype_name = "float" if dtype == torch.float32 else "double"
    for kernel in ("sample_drawn_kernel", "sample_backward_drawn_kernel"):
        # The emulation names the enumerator, a GPU profile its value.
        assert any(
            f"{kernel}<{dtype_name}, " in n and (f"GroupLayout::{group_layout}" in n or f"GroupLayout){value}" in n)
            for n in names
        ), (kernel, group_layout, names)


def test_noise_depends_on_the_seed(device):
    zeros = torch.zeros(64, 20, device=tensor_device(device))
    library = op_library(device)
    a = library.reparameterize(zeros, zeros, None, torch.tensor([1, 0], device=zeros.device), 1)
    b = library.reparameterize(zeros, zeros, None, torch.tensor([1, 1], device=zeros.device), 1)
    assert not torch.equal(a, b) and abs(a.std().item() - 1) < 0.1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(3, 1001), (37, 784), (2, 4097), (16, 64), (37, 64), (13, 128)], ids=str)
@pytest.mark.parametrize("num_samples", [1, 5])
def test_drawn_noise_gradients_match_the_cpu(device, dtype, shape, num_samples, layout):
    # sample_and_kl with drawn noise, random output gradients for z and the KL: the backward
    # regenerates the noise by counter groups (every shift of l * params modulo 64 occurs). Rows
    # of 64 or 128 aligned latents take the KL inside the sampling kernel (37 rows: the last
    # warp's threads are partly past the end).
    seed = torch.tensor([2024, 11])
    tensors = [randn(*shape, seed=0, scale=0.5).to(dtype), randn(*shape, seed=1, scale=0.5).to(dtype)]

    def call(dev, library, misalign):
        def fn(mu, logvar):
            if misalign:
                mu, logvar = misaligned(mu), misaligned(logvar)
            return library.sample_and_kl(mu, logvar, None, seed.to(dev), num_samples)

        outs, grads, _ = run_with_grads(fn, [t.to(dev) for t in tensors])
        return [t.cpu() for t in outs + grads]

    ours = []
    names = launched_kernels(
        device, lambda: ours.extend(call(tensor_device(device), op_library(device), layout == "one-element"))
    )
    for a, b in zip(ours, call("cpu", torch.ops.aevb_fast, False), strict=True):
        torch.testing.assert_close(a, b, **TOLERANCES[dtype])
    if names is not None:
        fused_kl = layout == "packed" and shape[-1] in (64, 128) and math.prod(shape) % 64 == 0
        assert any("KLTerm" in n for n in names) != fused_kl, names


# ---- what the CPU tests check, on the CUDA kernels too: extreme values, opcheck, determinism,
# torch.compile ------------------------------------------------------------------------------

# Each family's inputs at its formulas' edges: |logits| 1e4, logvar -80..80, a huge mean: finite
# where the truth is, inf not NaN.
EXTREME = {name: (tensors, op) for op, case in OPS.items() for name, tensors in case.extreme.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("case", EXTREME)
def test_extreme_values_as_on_the_cpu(device, case, dtype):
    tensors, op = EXTREME[case]
    tensors = [t.to(dtype) for t in tensors]
    ours, cpu = run(device, op, tensors, "packed"), run("cpu", op, tensors, "packed")
    for a, b in zip(ours, cpu, strict=True):
        assert torch.equal(torch.isfinite(a), torch.isfinite(b)) and torch.equal(a.isnan(), b.isnan())
        torch.testing.assert_close(a, b, equal_nan=True, **TOLERANCES[dtype])


@pytest.mark.parametrize("incoming", [1.0, -0.5])
def test_summed_backward_scales_on_the_device(device, incoming):
    """The summed form's backward is one kernel that reads the incoming gradient on the device
    (no host synchronisation) and, when it is 1 (loss.backward() on the sum), returns at once:
    the gradient is the forward's as it was made."""
    x, logits = (t.to(tensor_device(device)) for t in case_inputs("bernoulli_log_prob", (37, 64), 2))
    logits.requires_grad_()
    total = functions(device).bernoulli_log_prob(x, logits, reduction="sum")
    names = launched_kernels(device, lambda: total.backward(torch.tensor(incoming, device=total.device)))
    if names is not None:
        assert [n for n in names if "aevb_fast" in n or "kernel<" in n] and any(
            "scale_unless_one_kernel" in n for n in names
        ), names
    cpu_logits = logits.detach().cpu().requires_grad_()
    (incoming * functions("cpu").bernoulli_log_prob(x.cpu(), cpu_logits, reduction="sum")).backward()
    torch.testing.assert_close(logits.grad.cpu(), cpu_logits.grad, **TOLERANCES[torch.float32])


def test_run_to_run_identical(device):
    # Row sums in a fixed order, noise from the seed: two runs agree to the bit.
    tensors = case_inputs("gaussian_log_prob", (37, 5000), 2)
    first, second = (
        run(device, "gaussian_log_prob", tensors, "packed"),
        run(device, "gaussian_log_prob", tensors, "packed"),
    )
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    seed = torch.tensor([5, 6], device=tensor_device(device))
    zeros = torch.zeros(64, 784, device=tensor_device(device))
    draws = [op_library(device).sample_and_kl(zeros, zeros, None, seed, 3) for _ in range(2)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


def test_compiled_matches_eager(device):
    f = functions(device)

    def terms(mu, logvar, x, eps):
        z, kl = f.sample_and_kl(mu, logvar, eps=eps, num_samples=2)
        logits = z.repeat(1, 1, 4)
        return (
            f.bernoulli_log_prob(x, logits).mean(0)
            + f.gaussian_log_prob(x, logits.sigmoid(), 0.1 * logits).mean(0)
            - kl
            - f.gaussian_kl(mu, logvar)
        )

    inputs = [randn(8, 5, seed=0), randn(8, 5, seed=1, scale=0.5), rand(8, 20, seed=2), randn(2, 8, 5, seed=3)]
    results = []
    for fn in (terms, torch.compile(terms, fullgraph=True)):
        outs, grads, _ = run_with_grads(fn, [t.float().to(tensor_device(device)) for t in inputs])
        results.append(outs + grads[:2])
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
