"""Shared test helpers: devices, dtypes, per-dtype tolerances, and the comparisons every op test
makes (values and gradients against an oracle; low precision against PyTorch's own)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

import aevb_fast as af

ROOT = Path(__file__).resolve().parents[1]

# Devices are listed, not probed: a CUDA case skips inside the test (require_device), so nothing
# queries the GPU at import time. "emulated_cuda" is the CUDA kernels' code run on CPU tensors by
# aevb_fast.emulated_cuda (a development build; CI sets AEVB_FAST_REQUIRE_EMULATION=1 so that a
# missing build fails instead of skipping).
DEVICES = ["cpu", "cuda", "emulated_cuda"]
GPU_KERNELS = ["cuda", "emulated_cuda"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LOW_PRECISION = [torch.float16, torch.bfloat16]

# Fused vs reference, same dtype. float32 sums of ~1000 terms differ in the last bits.
TOLERANCES = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=2e-5, atol=2e-5),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
}
# Slack added to "at most twice PyTorch's own low-precision error" for results PyTorch gets exact.
LOW_PRECISION_ATOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}

# The paper's MNIST minibatch (100 x 784 pixels, J = 20 latents) and awkward sizes.
LATENT_SHAPES = [(100, 20), (1, 1), (3, 1001), (2, 3, 17), (5, 64)]
DATA_SHAPES = [(100, 784), (1, 1), (3, 1001), (2, 3, 17)]


def require_device(device: str) -> None:
    if device == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device on this machine")
        if af.build_info()["cuda"] is None:
            pytest.skip("aevb_fast was built without CUDA")
    if device == "emulated_cuda" and importlib.util.find_spec("aevb_fast._emulated_cuda") is None:
        message = "aevb_fast.emulated_cuda is not built (AEVB_FAST_EMULATED_CUDA=1 pip install ...)"
        if os.environ.get("AEVB_FAST_REQUIRE_EMULATION") == "1":
            pytest.fail(message)
        pytest.skip(message)


def functions(device: str):
    """The module whose operators run on ``device``: aevb_fast, or its CUDA emulation."""
    if device == "emulated_cuda":
        import aevb_fast.emulated_cuda

        return aevb_fast.emulated_cuda
    return af


def op_library(device: str):
    """torch.ops.aevb_fast, or the emulation's library of the same operators."""
    functions(device)  # the emulation's operators exist once its module is imported
    return torch.ops.aevb_fast_emulated if device == "emulated_cuda" else torch.ops.aevb_fast


def tensor_device(device: str) -> str:
    """Where the tensors of ``device``'s cases live (the emulation runs on CPU tensors)."""
    return "cpu" if device == "emulated_cuda" else device


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, dtype=torch.float64, device="cpu", seed=0, scale=1.0, shift=0.0):
    t = torch.randn(shape, generator=seeded(seed), dtype=torch.float64) * scale + shift
    return t.to(dtype=dtype, device=device)


def rand(*shape, dtype=torch.float64, device="cpu", seed=0):
    return torch.rand(shape, generator=seeded(seed), dtype=torch.float64).to(dtype=dtype, device=device)


def run_with_grads(fn, inputs, grad_seed=1, grad_dtype=None):
    """Runs fn on copies of inputs that require grad, back-propagates random (not all-ones)
    output gradients, and returns (outputs, input gradients, output gradients used)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    outputs = fn(*leaves)
    outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    grads = []
    for i, out in enumerate(outputs):
        g = torch.randn(out.shape, generator=seeded(grad_seed + i), dtype=torch.float64)
        grads.append(g.to(dtype=grad_dtype or out.dtype, device=out.device))
    torch.autograd.backward(outputs, [g.to(out.dtype) for g, out in zip(grads, outputs)])
    return [o.detach() for o in outputs], [t.grad for t in leaves], grads


def assert_matches(fused, reference, inputs, dtype, grad_seed=1):
    """fused and reference agree in value and in every input gradient."""
    out_f, grad_f, _ = run_with_grads(fused, inputs, grad_seed)
    out_r, grad_r, _ = run_with_grads(reference, inputs, grad_seed)
    tol = TOLERANCES[dtype]
    for a, b in zip(out_f, out_r):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(grad_f, grad_r):
        torch.testing.assert_close(a, b, **tol)


def _max_error(value, truth):
    if value.numel() == 0:
        return 0.0
    return (value.double() - truth.double()).abs().max().item()


def assert_low_precision_ok(fused, reference, inputs, dtype, grad_seed=1):
    """Flash-attention's rule: in a low-precision dtype, each fused output and gradient is at
    most twice as far from the float64 truth as PyTorch's own result in that dtype."""
    low = [t.to(dtype) for t in inputs]
    out_f, grad_f, grads = run_with_grads(fused, low, grad_seed)
    out_t, grad_t, _ = run_with_grads(reference, low, grad_seed)
    # The truth: the same low-precision inputs and output gradients, computed in float64.
    exact = [t.double() for t in low]
    leaves = [t.clone().requires_grad_(True) for t in exact]
    outs = reference(*leaves)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    torch.autograd.backward(outs, [g.double() for g in grads])
    truth_out, truth_grad = [o.detach() for o in outs], [t.grad for t in leaves]
    atol = LOW_PRECISION_ATOL[dtype]
    for name, ours, torchs, truth in [("output", a, b, c) for a, b, c in zip(out_f, out_t, truth_out)] + [
        ("gradient", a, b, c) for a, b, c in zip(grad_f, grad_t, truth_grad)
    ]:
        scale = max(1.0, truth.abs().max().item()) if truth.numel() else 1.0
        err_ours, err_torch = _max_error(ours, truth), _max_error(torchs, truth)
        assert err_ours <= 2 * err_torch + atol * scale, (
            f"{name}: fused error {err_ours:.3g} vs PyTorch {dtype} error {err_torch:.3g}"
        )


def non_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout (every other column of a wider tensor)."""
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    view = wide[..., ::2]
    assert not view.is_contiguous() or t.shape[-1] <= 1
    return view


def data_present(dataset: str) -> bool:
    """Whether a built-in dataset's files are where the CLI looks for them ($AEVB_FAST_DATA, then
    ../shared/data), without downloading or verifying anything."""
    from aevb_fast.training import data

    keys = [k for k in data.FILES if k == dataset or k.startswith(dataset + "_")]
    assert keys, f"no built-in dataset {dataset!r}"
    dirs = data.data_dirs()
    return all(
        any((d / data.FILES[k].path).is_file() or (d / (data.FILES[k].path + ".gz")).is_file() for d in dirs)
        for k in keys
    )


def needs_data(*datasets: str):
    """Skips a test, with the reason, unless the built-in datasets' files are on this machine."""
    missing = [d for d in datasets if not data_present(d)]
    return pytest.mark.skipif(
        bool(missing),
        reason=f"{', '.join(missing)} not in $AEVB_FAST_DATA or ../shared/data (see ../shared/data/MANIFEST.txt)",
    )


def load_script(path: str, name: str | None = None):
    """A script of the project that is not a package module (benchmarks/, examples/, .ci/), by its
    path from the project's root, loaded as a module."""
    spec = importlib.util.spec_from_file_location(name or Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_train_config(**overrides):
    """A TrainConfig for a quick run on the synthetic data (seconds on a CPU), without plots; give
    it ``out`` (the run's folder) and what else the test needs."""
    from aevb_fast.training import TrainConfig

    options = dict(dataset="synthetic", latent=4, hidden=32, batch_size=50, plots=False)
    options.update(overrides)
    return TrainConfig(**options)


def signal_during_step(monkeypatch, step: int, signum: int) -> None:
    """Every training run sends ``signum`` to this process while it takes its step ``step``
    (0-based), as a Ctrl-C mid-step would; the trainer acts on it before the next step."""
    from aevb_fast.training.step import TrainStep

    take_step = TrainStep.__call__

    def step_then_signal(self):
        if self.state.step == step:
            os.kill(os.getpid(), signum)
        return take_step(self)

    monkeypatch.setattr(TrainStep, "__call__", step_then_signal)
