"""reparameterize and sample_and_kl: one kernel, so one test file drives both through the same
cases (FUSED pairs each public function with its reference twin)."""

import pytest
import torch
from torch.distributions import Normal

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
    run_with_grads,
    seeded,
)

FUNCTIONS = {
    "reparameterize": (af.reparameterize, reference.reparameterize),
    "sample_and_kl": (af.sample_and_kl, reference.sample_and_kl),
}


def on_device(name, device):
    """FUNCTIONS[name] with the fused function of ``device`` (aevb_fast's or its CUDA emulation's)."""
    return getattr(functions(device), name), FUNCTIONS[name][1]


def with_eps(fn, num_samples):
    return lambda mu, logvar, eps: fn(mu, logvar, eps=eps, num_samples=num_samples)


def inputs(shape, num_samples=None, dtype=torch.float64, device="cpu"):
    eps_shape = shape if num_samples is None else (num_samples, *shape)
    return (
        randn(*shape, dtype=dtype, device=device, seed=0),
        randn(*shape, dtype=dtype, device=device, seed=1, scale=0.7),
        randn(*eps_shape, dtype=dtype, device=device, seed=2),
    )


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", LATENT_SHAPES)
@pytest.mark.parametrize("num_samples", [None, 1, 5])
def test_matches_reference_float64(name, device, shape, num_samples):
    require_device(device)
    fused, ref = on_device(name, device)
    assert_matches(
        with_eps(fused, num_samples), with_eps(ref, num_samples),
        inputs(shape, num_samples, device=tensor_device(device)), torch.float64,
    )


@pytest.mark.parametrize("shape", LATENT_SHAPES)
def test_matches_torch_distributions(shape):
    # z is a draw of N(mu, sigma) made from eps: log q(z) = log N(eps; 0, 1) - log sigma.
    mu, logvar, eps = inputs(shape, 3)
    z, kl = af.sample_and_kl(mu, logvar, eps=eps, num_samples=3)
    sigma = torch.exp(0.5 * logvar)
    torch.testing.assert_close(
        Normal(mu, sigma).log_prob(z), Normal(0.0, 1.0).log_prob(eps) - torch.log(sigma),
        rtol=1e-10, atol=1e-10,
    )
    # The one-sample estimate log q(z) - log p(z) averages to the analytic KL.
    torch.testing.assert_close(kl, reference.gaussian_kl(mu, logvar), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_kernel_noise_gradients_match_reference(name):
    # With noise drawn in the kernel, recover eps from z and check the gradients that the
    # backward pass (which regenerates eps from the seed) gives against the reference.
    fused, ref = FUNCTIONS[name]
    mu, logvar, _ = inputs((6, 45))
    out, grads, out_grads = run_with_grads(
        lambda m, v: fused(m, v, num_samples=4, generator=seeded(7)), (mu, logvar)
    )
    eps = (out[0] - mu) / torch.exp(0.5 * logvar)
    _, ref_grads, _ = run_with_grads(with_eps(ref, 4), (mu, logvar, eps))
    for ours, theirs in zip(grads, ref_grads[:2]):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("num_samples", [None, 3])
def test_gradcheck_given_eps(name, num_samples):
    fused, _ = FUNCTIONS[name]
    args = tuple(t.requires_grad_() for t in inputs((3, 5), num_samples))
    assert torch.autograd.gradcheck(with_eps(fused, num_samples), args)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("num_samples", [None, 3])
def test_gradcheck_kernel_noise(name, num_samples):
    fused, _ = FUNCTIONS[name]
    mu, logvar, _ = inputs((3, 5))
    fn = lambda m, v: fused(m, v, num_samples=num_samples, generator=seeded(11))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (mu.requires_grad_(), logvar.requires_grad_()))


def test_backward_does_not_store_noise():
    mu, logvar, _ = inputs((64, 20))
    mu.requires_grad_(), logvar.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        z, kl = af.sample_and_kl(mu, logvar, num_samples=8)
    # mu, logvar and the 2-element seed: no (8, 64, 20) tensor of eps or z.
    assert sum(saved) == 2 * mu.numel() + 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    ops = torch.ops.aevb_fast
    mu, logvar, eps = inputs((4, 9), 2, dtype=dtype)
    seed = torch.tensor([123, 456])
    for op in (ops.reparameterize.default, ops.sample_and_kl.default):
        torch.library.opcheck(op, (mu.clone().requires_grad_(), logvar, eps, None, 2))
        torch.library.opcheck(op, (mu, logvar.clone().requires_grad_(), None, seed, 2))
    grad_z = randn(2, 4, 9, dtype=dtype, seed=3)
    grad_kl = randn(4, dtype=af.ops.accumulate_dtype(dtype), seed=4)
    torch.library.opcheck(ops.reparameterize_backward.default, (grad_z, mu, logvar, eps, None))
    torch.library.opcheck(ops.reparameterize_backward.default, (grad_z, mu, logvar, None, seed))
    torch.library.opcheck(ops.sample_and_kl_backward.default, (grad_z, grad_kl, mu, logvar, None, seed))


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(name, device, dtype):
    require_device(device)
    fused, ref = on_device(name, device)
    where = tensor_device(device)
    if dtype in LOW_PRECISION:
        assert_low_precision_ok(with_eps(fused, 2), with_eps(ref, 2), inputs((100, 20), 2, device=where), dtype)
    else:
        assert_matches(with_eps(fused, 2), with_eps(ref, 2), inputs((100, 20), 2, dtype, where), dtype)
    mu, logvar, _ = inputs((10, 20), dtype=dtype, device=where)
    z = functions(device).reparameterize(mu, logvar, num_samples=2)
    assert z.dtype == dtype and z.shape == (2, 10, 20) and torch.isfinite(z).all()
    assert functions(device).sample_and_kl(mu, logvar)[1].dtype == af.ops.accumulate_dtype(dtype)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_non_contiguous(name):
    fused, ref = FUNCTIONS[name]
    mu, logvar, eps = inputs((6, 33), 2)
    args = (non_contiguous(mu), logvar.t().contiguous().t(), non_contiguous(eps))
    assert_matches(with_eps(fused, 2), with_eps(ref, 2), args, torch.float64)
    # In-kernel noise depends on the element index, not on the layout.
    g = lambda: seeded(3)  # noqa: E731
    torch.testing.assert_close(
        af.reparameterize(non_contiguous(mu), non_contiguous(logvar), generator=g()),
        af.reparameterize(mu, logvar, generator=g()),
    )


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_empty(name, shape):
    fused, ref = FUNCTIONS[name]
    mu, logvar, eps = inputs(shape, 2)
    out, ref_out = fused(mu, logvar, num_samples=2), ref(mu, logvar, eps=eps, num_samples=2)
    out = out if isinstance(out, tuple) else (out,)
    ref_out = ref_out if isinstance(ref_out, tuple) else (ref_out,)
    for a, b in zip(out, ref_out):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b)
    mu.requires_grad_()
    z = fused(mu, logvar, num_samples=2)
    (z[0] if isinstance(z, tuple) else z).sum().backward()
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


def test_bad_input():
    mu = torch.zeros(3, 4)
    cases = [
        (lambda: af.reparameterize(mu, torch.zeros(3, 5)), "logvar has shape"),
        (lambda: af.reparameterize(mu.long(), mu.long()), "mu must be a float"),
        (lambda: af.sample_and_kl(mu, mu.double()), "logvar has dtype"),
        (lambda: af.reparameterize(torch.zeros(()), torch.zeros(())), "at least one dimension"),
        (lambda: af.reparameterize(mu, mu, eps=torch.zeros(3, 5)), "eps must have the shape of mu"),
        (lambda: af.sample_and_kl(mu, mu, eps=torch.zeros(3, 4), num_samples=2), "eps must have shape"),
        (lambda: af.reparameterize(mu, mu, eps=torch.zeros(3, 4).double()), "eps has dtype"),
        (lambda: af.reparameterize(mu, mu, num_samples=0), "num_samples must be at least 1"),
        (lambda: torch.ops.aevb_fast.reparameterize(mu, mu, None, None, 1), "exactly one of eps"),
        (lambda: torch.ops.aevb_fast.reparameterize(mu, mu, None, torch.zeros(3).long(), 1), "seed must be"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize("other", ["meta", "cuda"])
def test_mixed_devices(other):
    # meta runs everywhere: it goes through the fake implementation's device check.
    if other == "cuda":
        require_device("cuda")
    with pytest.raises(ValueError, match="on the same device"):
        af.sample_and_kl(torch.zeros(3, 4), torch.zeros(3, 4, device=other))


@pytest.mark.parametrize("use", ["z", "kl"])
def test_backward_with_one_output_unused(use):
    mu, logvar, _ = inputs((5, 7))
    mu.requires_grad_(), logvar.requires_grad_()
    z, kl = af.sample_and_kl(mu, logvar, num_samples=3, generator=seeded(2))
    (z.sum() if use == "z" else kl.sum()).backward()
    expected_mu = torch.full_like(mu, 3.0) if use == "z" else mu.detach()
    torch.testing.assert_close(mu.grad, expected_mu)
