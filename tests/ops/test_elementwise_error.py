"""Each formula's float32 error element by element, on every device: one element a row, inputs on
grids that cross every branch of csrc/common/math.h (the exponential's range reduction and its
overflow edges, the KL's switch from its series to exp(x) - 1 - x at |x| = ln2/2, the Bernoulli's
sign split), values and gradients against the float64 reference. The op tests' random rows sum
hundreds of terms, which hides one element's error (a series used up to |x| = 1 instead of ln2/2
passed them); here each result is held to K ulp of the size of its formula's largest term.

On CUDA the float exponential is CUDA's expf and the 16-bit Bernoulli kernels use ex2.approx.ftz and
__fdividef; the emulated device runs those branches with host stand-ins, so these bounds hold
for the GPU's formulas before a GPU runs them (and tests/ops/test_cuda's device runs them there)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from aevb_fast import reference
from testing import DEVICES, functions, require_device, tensor_device

EPS = torch.finfo(torch.float32).eps  # 2^-23
TINY = torch.finfo(torch.float32).tiny  # 2^-126
K = 8  # ulp of the largest term; every kernel measured 4 or less (the ids print the worst)
HALF_LN2 = math.log(2) / 2


def grid(low: float, high: float, step: float, *edges: float) -> torch.Tensor:
    """Float32 values from low to high, and each edge with its float32 neighbours."""
    points = [torch.arange(low, high + step / 2, step, dtype=torch.float64).float()]
    for e in edges:
        x = torch.tensor(e, dtype=torch.float32)
        points.append(torch.stack([torch.nextafter(x, x - 1), x, torch.nextafter(x, x + 1)]))
    return torch.cat(points).unique()


# logvar: the exponential over float32's range; the KL's switch at +-ln2/2 and its k = +-1 edges.
LOGVAR = grid(-80.0, 80.0, 0.0625, HALF_LN2, -HALF_LN2, 3 * HALF_LN2, -3 * HALF_LN2, 1e-6, -1e-6)
LOGITS = grid(-100.0, 100.0, 0.0625, 1e-6, -1e-6, 88.0, -88.0, 87.3, -87.3)


@dataclass(frozen=True)
class Case:
    """call(f, *inputs) -> outputs on the device's functions f (or reference); inputs: float64
    columns; scale(*inputs) -> per output and per input gradient, the largest term's size."""

    call: Callable
    inputs: Callable[[], list[torch.Tensor]]
    scale: Callable


def column(t: torch.Tensor) -> torch.Tensor:
    return t.double().reshape(-1, 1)


def kl_terms(x):  # exp(x), 1 and |x|: the terms of exp(x) - 1 - x
    return x.exp() + 1 + x.abs()


def bernoulli_inputs():
    ones = torch.ones_like(LOGITS)
    return [column(torch.cat([0 * ones, ones])), column(torch.cat([LOGITS, LOGITS]))]


def bernoulli_scale(x, logits):
    size = logits.abs() + 1
    # The gradient x - sigmoid(l): absolute for x = 1; for x = 0 relative to sigmoid(l) down to
    # float32's smallest normal (the exponential flushes below it).
    return [size], [None, torch.maximum(x, torch.sigmoid(logits)).clamp(min=TINY / EPS)]


CASES = {
    "gaussian_kl": Case(
        lambda f, mu, logvar: f.gaussian_kl(mu, logvar, event_dims=1),
        lambda: [column(torch.full_like(LOGVAR, 0.25)), column(LOGVAR)],
        lambda mu, lv: ([0.5 * (mu * mu + kl_terms(lv))], [mu.abs(), 0.5 * kl_terms(lv)]),
    ),
    "gaussian_kl_to_prior": Case(
        lambda f, mu, logvar, prior_mu, prior_logvar: f.gaussian_kl(mu, logvar, prior_mu, prior_logvar, event_dims=1),
        lambda: [column(torch.ones_like(LOGVAR)), column(0 * LOGVAR), column(0 * LOGVAR), column(LOGVAR)],
        lambda mu, lv, pm, plv: (
            [0.5 * ((-plv).exp() + kl_terms(lv - plv))],
            [(-plv).exp(), 0.5 * kl_terms(lv - plv), (-plv).exp(), 0.5 * ((-plv).exp() + kl_terms(lv - plv))],
        ),
    ),
    "reparameterize": Case(
        lambda f, mu, logvar, eps: f.reparameterize(mu, logvar, eps=eps),
        lambda: [column(0 * LOGVAR), column(LOGVAR.clamp(max=80)), column(torch.full_like(LOGVAR, -1.5))],
        lambda mu, lv, eps: ([(0.5 * lv).exp() * 1.5], [torch.ones_like(mu), (0.5 * lv).exp(), (0.5 * lv).exp()]),
    ),
    "sample_and_kl": Case(
        lambda f, mu, logvar, eps: f.sample_and_kl(mu, logvar, eps=eps, event_dims=1),
        lambda: [column(torch.full_like(LOGVAR, 0.25)), column(LOGVAR), column(torch.full_like(LOGVAR, -1.5))],
        lambda mu, lv, eps: (
            [(0.5 * lv).exp() * 1.5 + 0.25, 0.5 * (mu * mu + kl_terms(lv))],
            [1 + mu.abs(), (0.5 * lv).exp() + 0.5 * kl_terms(lv), (0.5 * lv).exp()],
        ),
    ),
    "gaussian_log_prob": Case(
        lambda f, x, mean, logvar: f.gaussian_log_prob(x, mean, logvar, event_dims=1),
        lambda: [column(torch.full_like(LOGVAR, 0.75)), column(0 * LOGVAR), column(LOGVAR.clamp(-40, 40))],
        lambda x, mean, lv: (
            [0.5 * (lv.abs() + x * x * (-lv).exp() + 2)],
            [(-lv).exp(), (-lv).exp(), 0.5 * (x * x * (-lv).exp() + 1)],
        ),
    ),
    "bernoulli_log_prob": Case(
        lambda f, x, logits: f.bernoulli_log_prob(x, logits, event_dims=1),
        bernoulli_inputs,
        bernoulli_scale,
    ),
    "bernoulli_log_prob_summed": Case(  # the gradient made in the forward pass
        lambda f, x, logits: f.bernoulli_log_prob(x, logits, event_dims=1, reduction="sum"),
        bernoulli_inputs,
        lambda x, logits: ([None], bernoulli_scale(x, logits)[1]),
    ),
}


def values_and_grads(call, inputs):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    outputs = call(*leaves)
    outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    torch.autograd.backward(outputs, [torch.ones_like(o) for o in outputs])
    return [o.detach() for o in outputs], [t.grad for t in leaves]


def worst_ulps(ours, truth, scale):
    """The largest |ours - truth| / (eps * scale), where the truth is finite."""
    finite = torch.isfinite(truth)
    assert torch.equal(torch.isfinite(ours), finite), "non-finite where the float64 truth is finite (or not)"
    err = (ours.double() - truth).abs() / (EPS * scale.reshape(truth.shape))
    return err[finite].max().item() if finite.any() else 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CASES))
def test_float32_error_per_element(device, name):
    require_device(device)
    case = CASES[name]
    inputs64 = case.inputs()
    where = tensor_device(device)
    out32, grad32 = values_and_grads(
        lambda *t: case.call(functions(device), *t), [t.float().to(where) for t in inputs64]
    )
    # The truth: the same float32 inputs, in float64.
    out64, grad64 = values_and_grads(lambda *t: case.call(reference, *t), inputs64)
    out_scale, grad_scale = case.scale(*inputs64)
    worst = {}
    for kind, ours, truths, scales in (("output", out32, out64, out_scale), ("grad", grad32, grad64, grad_scale)):
        for i, (a, b, s) in enumerate(zip(ours, truths, scales, strict=True)):
            if s is not None:
                worst[f"{kind} {i}"] = worst_ulps(a.cpu(), b, s)
    print(f"{name} on {device}: worst error in ulp of the largest term: {worst}")
    assert max(worst.values()) <= K, worst


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_16_bit_bernoulli_error_per_element(device, dtype, reduction):
    """The 16-bit Bernoulli kernels (on CUDA: ex2.approx.ftz and __fdividef): the float32 log-probability
    within K ulp of |l| + 1; the 16-bit gradient within one of its own ulp plus that."""
    require_device(device)
    x, logits = (t.to(dtype) for t in bernoulli_inputs())  # logits rounded to the dtype
    call = lambda f, *t: f.bernoulli_log_prob(*t, event_dims=1, reduction=reduction)  # noqa: E731
    where = tensor_device(device)
    (out16,), (_, grad16) = values_and_grads(lambda *t: call(functions(device), *t), [x.to(where), logits.to(where)])
    (out64,), (_, grad64) = values_and_grads(lambda *t: call(reference, *t), [x.double(), logits.double()])
    (out_scale,), (_, grad_scale) = bernoulli_scale(x.double(), logits.double())
    assert out16.dtype == torch.float32 and grad16.dtype == dtype
    # Stored in 16 bits: one of its ulp more, and below its smallest normal half its subnormals'
    # spacing (float16's 6e-8) or the exponential's flush to 0 (about 4.5e-38), whichever is more.
    info = torch.finfo(dtype)
    floor = max(K * TINY, info.tiny * info.eps)
    grad_scale = torch.maximum(grad_scale * (1 + info.eps / (K * EPS)), torch.tensor(floor / (K * EPS)))
    worst = {"grad": worst_ulps(grad16.cpu(), grad64, grad_scale)}
    if reduction == "none":
        worst["output"] = worst_ulps(out16.cpu(), out64, out_scale)
    print(f"{dtype} bernoulli_log_prob ({reduction}) on {device}: worst error / bound: {worst} / {K}")
    assert max(worst.values()) <= K, worst
