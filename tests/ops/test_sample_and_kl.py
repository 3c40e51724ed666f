"""reparameterize and sample_and_kl: one kernel, so both are driven through the same spec."""

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence
from torch.distributions.transforms import AffineTransform

import aevb_fast as af
from aevb_fast import reference
from op_tester import KernelPaths, OpTester, as_list
from testing import (
    DEVICES,
    LATENT_SHAPES,
    functions,
    non_contiguous,
    randn,
    require_device,
    run_with_grads,
    seeded,
    tensor_device,
)

FUNCTIONS = {
    "reparameterize": (af.reparameterize, reference.reparameterize),
    "sample_and_kl": (af.sample_and_kl, reference.sample_and_kl),
}


def kernel_inputs(shape, samples):
    return [randn(*shape, seed=0, scale=0.5), randn(*shape, seed=1, scale=0.5), randn(samples, *shape, seed=2)]


def kl_kernel_inputs(shape, samples):
    return [randn(*shape, seed=0, scale=0.5), randn(*shape, seed=1, scale=0.5)]


# The family's calls on every CUDA kernel path (tests/ops/test_gpu_kernels.py); mu of 1e3 and
# log-variances of -80 and 80: finite where the truth is, inf not NaN.
KERNEL_PATHS = {
    "reparameterize": KernelPaths(
        lambda f, m, v, e: f.reparameterize(m, v, eps=e, num_samples=e.shape[0]), kernel_inputs
    ),
    "sample_and_kl": KernelPaths(
        lambda f, m, v, e: f.sample_and_kl(m, v, eps=e, num_samples=e.shape[0]),
        kernel_inputs,
        extreme={
            "sample_and_kl": [
                torch.tensor([[1e3, -1e3, 0.0, 0.0]]),
                torch.tensor([[-80.0, 80.0, -80.0, 80.0]]),
                torch.ones(1, 1, 4),
            ]
        },
    ),
    "gaussian_kl": KernelPaths(
        lambda f, m, v: f.gaussian_kl(m, v),
        kl_kernel_inputs,
        samples=(1,),
        extreme={
            "gaussian_kl": [
                torch.tensor([[1e3, 0.0, -1e3], [0.0, 0.0, 0.0]]),
                torch.tensor([[-80.0, 80.0, 0.0], [-80.0, -80.0, -80.0]]),
            ],
            "overflow": [torch.tensor([[0.0, 1000.0]]), torch.tensor([[0.0, 1000.0]])],
        },
    ),
}


def with_eps(fn, num_samples):
    return lambda mu, logvar, eps: fn(mu, logvar, eps=eps, num_samples=num_samples)


def inputs(shape, num_samples=None, dtype=torch.float64, device="cpu"):
    eps_shape = shape if num_samples is None else (num_samples, *shape)
    return [
        randn(*shape, dtype=dtype, device=device, seed=0),
        randn(*shape, dtype=dtype, device=device, seed=1, scale=0.7),
        randn(*eps_shape, dtype=dtype, device=device, seed=2),
    ]


class SampleOpTester(OpTester):
    """Given eps as the third input; num_samples=None when eps has mu's shape."""

    cases = [(shape, samples) for shape in LATENT_SHAPES for samples in (None, 1, 5)]
    empty_cases = [((0, 5), 2), ((5, 0), 2), ((0, 5), None)]
    gradcheck_case = ((3, 5), 3)
    dtype_case = ((100, 20), 2)
    broadcastable = (0, 1)

    def make_inputs(self, case, dtype=torch.float64, device="cpu"):
        return inputs(*case, dtype=dtype, device=device)

    def call(self, f, mu, logvar, eps):
        rank = len(torch.broadcast_shapes(mu.shape, logvar.shape))
        event = {"event_dims": 1} if self.op == "sample_and_kl" else {}  # reparameterize has none
        return getattr(f, self.op)(
            mu, logvar, eps=eps, num_samples=None if eps.dim() == rank else eps.shape[0], **event
        )

    def op_args(self, library, inputs):
        mu, logvar, eps = inputs
        seed = torch.tensor([123, 456], device=mu.device)
        return [
            (mu.clone().requires_grad_(), logvar, eps, None, eps.shape[0]),
            (mu, logvar.clone().requires_grad_(), None, seed, eps.shape[0]),
        ]


class TestReparameterize(SampleOpTester):
    op = "reparameterize"
    outputs = ("input",)

    def distribution(self, mu, logvar, eps):
        # Normal(mu, sigma).rsample() is this affine map of a standard normal draw.
        return AffineTransform(mu, torch.exp(0.5 * logvar))(eps)

    def backward_op_args(self, args, out_grads):
        return (out_grads[0], *args[:4])

    def bad_inputs(self):
        mu = torch.zeros(3, 4)
        return [
            (lambda: af.reparameterize(mu, torch.zeros(3, 5)), "do not broadcast together: mu"),
            (lambda: af.reparameterize(mu.long(), mu.long()), "mu must be a float"),
            (lambda: torch.ops.aevb_fast.sample_and_kl(mu, mu.double(), mu[None], None, 1), "logvar has dtype"),
            (lambda: torch.ops.aevb_fast.reparameterize(mu, torch.zeros(3, 5), mu[None], None, 1), "logvar has shape"),
            (lambda: af.reparameterize(torch.zeros(()), torch.zeros(())), "at least one dimension"),
            # event_dims required above 2 dims, as for the log-likelihoods: (B, C, H, W) would
            # silently give a (B, C, H) KL.
            (
                lambda: af.sample_and_kl(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 5)),
                r"sample_and_kl: mu has 4 dims \(2, 3, 4, 5\); pass event_dims",
            ),
            (lambda: af.reparameterize(mu, mu, eps=torch.zeros(3, 5)), "eps must have the shape of mu"),
            (lambda: af.sample_and_kl(mu, mu, eps=torch.zeros(3, 4), num_samples=2), "eps must have shape"),
            (lambda: torch.ops.aevb_fast.reparameterize(mu, mu, mu[None].double(), None, 1), "eps has dtype"),
            (lambda: af.reparameterize(mu, mu, num_samples=0), "num_samples must be at least 1"),
            (
                lambda: af.reparameterize(mu, mu, num_samples=2.0),
                "reparameterize: num_samples must be an int, got float",
            ),
            (lambda: af.sample_and_kl(mu, mu, generator=0), "sample_and_kl: generator must be a torch.Generator"),
            (lambda: af.sample_and_kl(mu, mu, event_dims=1.0), "sample_and_kl: event_dims must be an int, got float"),
            (
                lambda: af.sample_and_kl(non_contiguous(mu), non_contiguous(mu), event_dims=3),
                r"event_dims must be between 0 and mu.dim\(\) = 2, got 3",
            ),
            (lambda: torch.ops.aevb_fast.reparameterize(mu, mu, None, None, 1), "exactly one of eps"),
            (lambda: torch.ops.aevb_fast.reparameterize(mu, mu, None, torch.zeros(3).long(), 1), "seed must be"),
        ]


class TestSampleAndKL(SampleOpTester):
    op = "sample_and_kl"
    outputs = ("input", "reduced")

    def distribution(self, mu, logvar, eps):
        q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
        p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
        return TestReparameterize.distribution(self, mu, logvar, eps), kl_divergence(q, p)

    def backward_op_args(self, args, out_grads):
        return (*out_grads, *args[:4])


@pytest.mark.parametrize("name", FUNCTIONS)
def test_kernel_noise_gradients_match_reference(name):
    # With noise drawn in the kernel, recover eps from z and check the gradients that the
    # backward pass (which regenerates eps from the seed) gives against the reference.
    fused, ref = FUNCTIONS[name]
    mu, logvar, _ = inputs((6, 45))
    out, grads, out_grads = run_with_grads(lambda m, v: fused(m, v, num_samples=4, generator=seeded(7)), (mu, logvar))
    eps = (out[0] - mu) / torch.exp(0.5 * logvar)
    _, ref_grads, _ = run_with_grads(with_eps(ref, 4), (mu, logvar, eps))
    for ours, theirs in zip(grads, ref_grads[:2]):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("num_samples", [None, 3])
def test_gradcheck_kernel_noise(name, num_samples):
    fused, _ = FUNCTIONS[name]
    mu, logvar, _ = inputs((3, 5))
    fn = lambda m, v: fused(m, v, num_samples=num_samples, generator=seeded(11))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (mu.requires_grad_(), logvar.requires_grad_()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_double_backward_with_drawn_noise(device, name):
    """Under create_graph=True the backward regenerates the noise the forward drew: its first
    derivatives equal the kernels', its second ones the formula's with that noise (mu of the
    logvar's shape, and a mu broadcast over the batch)."""
    require_device(device)
    where = tensor_device(device)
    fused, ref = getattr(functions(device), name), FUNCTIONS[name][1]
    for mu_shape in [(4, 6), (6,)]:
        mu = randn(*mu_shape, seed=0, device=where).requires_grad_()
        logvar = randn(4, 6, seed=1, scale=0.7, device=where).requires_grad_()

        def loss(f, **noise):
            torch.manual_seed(7)
            out = as_list(f(mu, logvar, num_samples=3, **noise))
            return (out[0] ** 2).sum() + sum(o.sum() for o in out[1:]), out[0]

        total, z = loss(fused)
        first = torch.autograd.grad(total, (mu, logvar), create_graph=True)
        second = torch.autograd.grad(first[1].sum(), (mu, logvar))
        plain = torch.autograd.grad(loss(fused)[0], (mu, logvar))
        ref_total, _ = loss(ref, eps=((z - mu) / torch.exp(0.5 * logvar)).detach())
        ref_first = torch.autograd.grad(ref_total, (mu, logvar), create_graph=True)
        ref_second = torch.autograd.grad(ref_first[1].sum(), (mu, logvar))
        for ours, theirs in zip(first + second, plain + ref_second, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
        assert second[1].abs().sum() > 0


def test_backward_does_not_store_noise():
    mu, logvar, _ = inputs((64, 20))
    mu.requires_grad_(), logvar.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        z, kl = af.sample_and_kl(mu, logvar, num_samples=8)
    # mu, logvar and the 2-element seed: no (8, 64, 20) tensor of eps or z.
    assert sum(saved) == 2 * mu.numel() + 2


def test_drawn_noise_ignores_layout():
    # In-kernel noise depends on the element index, not on the layout.
    mu, logvar, _ = inputs((6, 33))
    torch.testing.assert_close(
        af.reparameterize(non_contiguous(mu), non_contiguous(logvar), generator=seeded(3)),
        af.reparameterize(mu, logvar, generator=seeded(3)),
    )


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_empty_with_drawn_noise(name, shape):
    fused, _ = FUNCTIONS[name]
    mu, logvar, _ = inputs(shape)
    mu.requires_grad_()
    out = fused(mu, logvar, num_samples=2)
    assert (out[0] if isinstance(out, tuple) else out).shape == (2, *shape)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    assert mu.grad.shape == mu.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_extreme_values(dtype):
    mu = torch.tensor([[1e3, -1e3, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    logvar = torch.tensor([[-80.0, 80.0, -80.0, 80.0]], dtype=dtype, requires_grad=True)
    z, kl = af.sample_and_kl(mu, logvar, num_samples=3)
    assert torch.isfinite(z).all() and torch.isfinite(kl).all()
    (z.sum() + kl.sum()).backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(logvar.grad).all()
    # sigma = exp(logvar / 2) overflowing the dtype gives inf, not NaN.
    huge = torch.tensor([[2000.0]], dtype=dtype)
    z = af.reparameterize(torch.zeros_like(huge), huge, eps=torch.ones_like(huge))
    assert torch.isinf(z).all()


@pytest.mark.parametrize("use", ["z", "kl"])
def test_backward_with_one_output_unused(use):
    mu, logvar, _ = inputs((5, 7))
    mu.requires_grad_(), logvar.requires_grad_()
    z, kl = af.sample_and_kl(mu, logvar, num_samples=3, generator=seeded(2))
    (z.sum() if use == "z" else kl.sum()).backward()
    expected_mu = torch.full_like(mu, 3.0) if use == "z" else mu.detach()
    torch.testing.assert_close(mu.grad, expected_mu)


def test_a_per_latent_logvar_broadcasts_over_the_batch():
    """reparameterize(mu (B, J), logvar (J,)), as a learned per-latent variance gives it."""
    mu, logvar, eps = randn(4, 3, seed=0).requires_grad_(), randn(3, seed=1).requires_grad_(), randn(4, 3, seed=2)
    z = af.reparameterize(mu, logvar, eps=eps)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)
    z.sum().backward()
    assert logvar.grad.shape == (3,)
    torch.testing.assert_close(logvar.grad, (0.5 * torch.exp(0.5 * logvar) * eps).sum(0).detach())


def test_reference_takes_python_numbers_where_the_ops_do():
    """logvar=0.0 and a prior of numbers work in aevb_fast.reference as in the fused ops."""
    mu = torch.randn(3, 4, dtype=torch.float64)
    eps = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(af.reparameterize(mu, 0.5, eps=eps), reference.reparameterize(mu, 0.5, eps=eps))
    torch.testing.assert_close(af.gaussian_kl(mu, 0.0), reference.gaussian_kl(mu, 0.0))
    torch.testing.assert_close(af.gaussian_kl(mu, 0.3, 0.1, -0.2), reference.gaussian_kl(mu, 0.3, 0.1, -0.2))
    z, kl = reference.sample_and_kl(mu, -1.0, eps=eps)
    torch.testing.assert_close(z, af.sample_and_kl(mu, -1.0, eps=eps)[0])


def test_numpy_integers_count_as_ints():
    mu = torch.zeros(3, 4)
    assert af.reparameterize(mu, mu, num_samples=np.int64(2)).shape == (2, 3, 4)
    assert af.gaussian_kl(mu, mu, event_dims=np.int32(0)).shape == (3, 4)


def test_double_backward_is_finite_where_the_kernels_are():
    """The create_graph=True formulas are factored as the kernels' are: a log-variance of -95 in
    float32 (1 / var overflows, 1 / sigma does not) gives the kernels' finite gradients, not
    0 * inf."""
    mu = torch.zeros(1, 3, requires_grad=True)
    logvar = torch.full((1, 3), -95.0, requires_grad=True)
    x = torch.zeros(1, 3)
    for f in (lambda: af.gaussian_log_prob(x, mu, logvar), lambda: af.gaussian_kl(x, logvar, mu, logvar)):
        plain = torch.autograd.grad(f().sum(), (mu, logvar))
        graphed = torch.autograd.grad(f().sum(), (mu, logvar), create_graph=True)
        for a, b in zip(graphed, plain, strict=True):
            assert torch.isfinite(b).all()
            torch.testing.assert_close(a, b)
