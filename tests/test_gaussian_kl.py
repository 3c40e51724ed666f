import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

import aevb_fast as af
from aevb_fast import reference

from testing import (
    DEVICES,
    DTYPES,
    LATENT_SHAPES,
    LOW_PRECISION,
    assert_low_precision_ok,
    assert_matches,
    non_contiguous,
    randn,
    functions,
    require_device,
    tensor_device,
)


def inputs(shape, dtype=torch.float64, device="cpu"):
    return randn(*shape, dtype=dtype, device=device, seed=0), randn(
        *shape, dtype=dtype, device=device, seed=1, scale=0.7
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", LATENT_SHAPES)
def test_matches_reference_float64(device, shape):
    require_device(device)
    kl = functions(device).gaussian_kl
    assert_matches(kl, reference.gaussian_kl, inputs(shape, device=tensor_device(device)), torch.float64)


@pytest.mark.parametrize("shape", LATENT_SHAPES)
def test_matches_torch_distributions(shape):
    mu, logvar = inputs(shape)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    torch.testing.assert_close(af.gaussian_kl(mu, logvar), kl_divergence(q, p), rtol=1e-10, atol=1e-10)


def test_gradcheck():
    mu, logvar = (t.requires_grad_() for t in inputs((3, 7)))
    assert torch.autograd.gradcheck(af.gaussian_kl, (mu, logvar))


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    mu, logvar = inputs((4, 9), dtype=dtype)
    torch.library.opcheck(torch.ops.aevb_fast.gaussian_kl.default, (mu.requires_grad_(), logvar))
    grad = randn(4, dtype=af.ops.accumulate_dtype(dtype), seed=5)
    torch.library.opcheck(torch.ops.aevb_fast.gaussian_kl_backward.default, (grad, mu.detach(), logvar))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(device, dtype):
    require_device(device)
    kl = functions(device).gaussian_kl
    mu, logvar = inputs((100, 20), dtype=dtype, device=tensor_device(device))
    assert kl(mu, logvar).dtype == af.ops.accumulate_dtype(dtype)
    if dtype in LOW_PRECISION:
        assert_low_precision_ok(kl, reference.gaussian_kl, inputs((100, 20), device=tensor_device(device)), dtype)
    else:
        assert_matches(kl, reference.gaussian_kl, (mu, logvar), dtype)


def test_non_contiguous():
    mu, logvar = inputs((6, 33))
    expected = af.gaussian_kl(mu, logvar)
    torch.testing.assert_close(af.gaussian_kl(non_contiguous(mu), non_contiguous(logvar)), expected)
    torch.testing.assert_close(af.gaussian_kl(mu.t().contiguous().t(), logvar), expected)
    assert_matches(af.gaussian_kl, reference.gaussian_kl, (non_contiguous(mu), logvar.t().contiguous().t()), torch.float64)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0,)])
def test_empty(shape):
    mu, logvar = inputs(shape)
    out, ref = af.gaussian_kl(mu, logvar), reference.gaussian_kl(mu, logvar)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    mu.requires_grad_()
    af.gaussian_kl(mu, logvar).sum().backward()
    assert mu.grad.shape == mu.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_extreme_values(dtype):
    mu = torch.tensor([[1e3, 0.0, -1e3], [0.0, 0.0, 0.0]], dtype=dtype)
    logvar = torch.tensor([[-80.0, 80.0, 0.0], [-80.0, -80.0, -80.0]], dtype=dtype)
    mu.requires_grad_(), logvar.requires_grad_()
    kl = af.gaussian_kl(mu, logvar)
    truth = reference.gaussian_kl(mu.detach().double(), logvar.detach().double())
    assert torch.isfinite(kl).all()
    torch.testing.assert_close(kl.double(), truth, rtol=1e-5, atol=1e-3)
    kl.sum().backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(logvar.grad).all()
    # exp(logvar) overflowing the accumulation dtype gives inf, not NaN.
    big = torch.tensor([[0.0, 1000.0]], dtype=dtype)
    assert torch.isinf(af.gaussian_kl(big, big)).all()


def test_small_logvar_keeps_precision():
    # expm1 keeps exp(logvar) - 1 - logvar accurate near 0, where the naive form cancels.
    logvar = torch.full((1, 4), 1e-4, dtype=torch.float32)
    mu = torch.zeros_like(logvar)
    truth = 0.5 * 4 * (torch.expm1(logvar.double()) - logvar.double())[0, 0].item()
    ours = abs(af.gaussian_kl(mu, logvar).item() - truth) / truth
    naive = abs(reference.gaussian_kl(mu, logvar).item() - truth) / truth
    assert ours < 2e-3 and ours < naive / 100


@pytest.mark.parametrize(
    "mu, logvar, match",
    [
        (torch.zeros(3, 4), torch.zeros(3, 5), "logvar has shape"),
        (torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3, 4, dtype=torch.int64), "mu must be a float"),
        (torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.float64), "logvar has dtype"),
        (torch.zeros(()), torch.zeros(()), "mu must have at least one dimension"),
    ],
)
def test_bad_input(mu, logvar, match):
    with pytest.raises(ValueError, match=match):
        af.gaussian_kl(mu, logvar)


@pytest.mark.parametrize("other", ["meta", "cuda"])
def test_mixed_devices(other):
    # meta runs everywhere: it goes through the fake implementation's device check.
    if other == "cuda":
        require_device("cuda")
    with pytest.raises(ValueError, match="on the same device"):
        af.gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4, device=other))
