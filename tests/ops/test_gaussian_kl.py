import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

import aevb_fast as af
from aevb_fast import reference
from op_tester import OpTester
from testing import LATENT_SHAPES, non_contiguous, randn


class TestGaussianKL(OpTester):
    op = "gaussian_kl"
    broadcastable = (0, 1)
    cases = LATENT_SHAPES
    empty_cases = [(0, 5), (5, 0), (0,)]
    gradcheck_case = (3, 7)
    dtype_case = (100, 20)

    def make_inputs(self, shape, dtype=torch.float64, device="cpu"):
        return [
            randn(*shape, dtype=dtype, device=device, seed=0),
            randn(*shape, dtype=dtype, device=device, seed=1, scale=0.7),
        ]

    def call(self, f, mu, logvar):
        return f.gaussian_kl(mu, logvar, event_dims=1)

    def distribution(self, mu, logvar):
        q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
        return kl_divergence(q, Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1))

    def op_args(self, library, inputs):
        mu, logvar = inputs
        return [(mu.clone().requires_grad_(), logvar)]

    def backward_op_args(self, args, out_grads):
        return (out_grads[0], *args)

    def bad_inputs(self):
        z = torch.zeros
        return [
            (lambda: af.gaussian_kl(z(3, 4), z(3, 5)), r"do not broadcast together: mu \(3, 4\), logvar \(3, 5\)"),
            (
                lambda: af.gaussian_kl(non_contiguous(z(3, 4)), non_contiguous(z(3, 4)), event_dims=3),
                r"gaussian_kl: event_dims must be between 0 and mu.dim\(\) = 2, got 3",
            ),
            (lambda: af.gaussian_kl(z(3, 4).long(), z(3, 4).long()), "mu must be a float"),
            (lambda: torch.ops.aevb_fast.gaussian_kl(z(3, 4), z(3, 4).double()), "logvar has dtype"),
            (lambda: torch.ops.aevb_fast.gaussian_kl(z(3, 4), z(3, 5)), "logvar has shape"),
            (lambda: af.gaussian_kl(z(()), z(())), "mu must have at least one dimension"),
            (
                lambda: af.gaussian_kl(z(2, 3, 4), z(2, 3, 4)),
                r"gaussian_kl: mu has 3 dims \(2, 3, 4\); pass event_dims",
            ),
            # the broadcast shape counts: a (J,) logvar with (B, C, J) means
            (lambda: af.gaussian_kl(z(2, 3, 4), z(4)), "mu has 3 dims"),
        ]


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
