"""The KL to a learned diagonal prior (a hierarchical VAE's layer), alone and fused with the
sample: gaussian_kl and sample_and_kl given prior_mu and prior_logvar, over event_dims. The
common operator tests (OpTester) run on latents summed over all but their first dim, the way a
VDVAE-style model sums its (B, C, H, W) layers; the special cases stay below."""

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

import aevb_fast as af
from aevb_fast import reference
from aevb_fast.distributions import DiagonalNormal
from op_tester import OpTester
from testing import DEVICES, functions, randn, require_device, run_with_grads, seeded, tensor_device

SHAPES = [(4, 3, 5, 6), (2, 3, 17), (100, 20), (1, 1), (3, 1001)]


def latents(shape, dtype=torch.float64, device="cpu"):
    """mu, logvar, prior_mu, prior_logvar: the prior's log-variance below and above the posterior's."""
    return [
        randn(*shape, dtype=dtype, device=device, seed=0),
        randn(*shape, dtype=dtype, device=device, seed=1, scale=0.7),
        randn(*shape, dtype=dtype, device=device, seed=2, scale=0.5),
        randn(*shape, dtype=dtype, device=device, seed=3, scale=0.7),
    ]


def event_dims_of(*tensors):
    """All dims but the first of the inputs' broadcast shape."""
    return len(torch.broadcast_shapes(*(t.shape for t in tensors))) - 1


def torch_kl(mu, logvar, prior_mu, prior_logvar, event_dims):
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), event_dims)
    return kl_divergence(q, Independent(Normal(prior_mu, torch.exp(0.5 * prior_logvar)), event_dims))


class TestKLToPrior(OpTester):
    op = "gaussian_kl"
    cases = SHAPES
    empty_cases = [(0, 5), (5, 0), (0, 3, 2)]
    gradcheck_case = (3, 2, 5)
    dtype_case = (16, 4, 8, 8)
    broadcastable = (0, 1, 2, 3)

    def make_inputs(self, shape, dtype=torch.float64, device="cpu"):
        return latents(shape, dtype, device)

    def call(self, f, mu, logvar, prior_mu, prior_logvar):
        return f.gaussian_kl(
            mu, logvar, prior_mu, prior_logvar, event_dims=event_dims_of(mu, logvar, prior_mu, prior_logvar)
        )

    def distribution(self, *inputs):
        return torch_kl(*inputs, event_dims_of(*inputs))

    def op_args(self, library, inputs):
        mu, logvar, prior_mu, prior_logvar = inputs
        return [
            (mu, logvar.clone().requires_grad_(), prior_mu.clone().requires_grad_(), prior_logvar, 2),
            (mu, logvar, prior_mu, prior_logvar.clone().requires_grad_(), 0),
        ]

    def backward_op_args(self, args, out_grads):
        return (out_grads[0], *args)

    def bad_inputs(self):
        z = torch.zeros
        ops = torch.ops.aevb_fast
        return [
            (
                lambda: af.gaussian_kl(z(3, 4), z(3, 4), z(3, 5), z(3, 5)),
                r"do not broadcast together: .*prior_mu \(3, 5\)",
            ),
            (lambda: af.gaussian_kl(z(3, 4), z(3, 4), z(3, 4), z(3, 4), event_dims=3), "event_dims must be between 0"),
            (lambda: ops.gaussian_kl(z(3, 4), z(3, 4), z(3, 4).long(), z(3, 4)), "prior_mu must be a float"),
            (
                lambda: ops.gaussian_kl(z(3, 4), z(3, 4), z(3, 4), None),
                "prior_mu and prior_logvar must be given together",
            ),
            (lambda: ops.gaussian_kl(z(3, 4), z(3, 4), z(3, 4), z(3, 4).double()), "prior_logvar has dtype"),
            (lambda: ops.gaussian_kl(z(3, 4), z(3, 4), z(3, 4), z(4, 4)), "prior_logvar has shape"),
            (lambda: ops.gaussian_kl(z(3, 4), z(3, 4), None, None, -1), "event_dims must be between 0"),
        ]


class TestSampleAndKLToPrior(OpTester):
    """Given eps of shape (L, *mu.shape) as the fifth input."""

    op = "sample_and_kl"
    outputs = ("input", "reduced")
    cases = [(shape, 2) for shape in SHAPES]
    empty_cases = [((0, 5), 2), ((5, 0), 2)]
    gradcheck_case = ((3, 2, 5), 2)
    dtype_case = ((16, 4, 8, 8), 1)
    broadcastable = (0, 1, 2, 3)

    def make_inputs(self, case, dtype=torch.float64, device="cpu"):
        shape, samples = case
        return [*latents(shape, dtype, device), randn(samples, *shape, dtype=dtype, device=device, seed=4)]

    def call(self, f, mu, logvar, prior_mu, prior_logvar, eps):
        return f.sample_and_kl(
            mu,
            logvar,
            prior_mu,
            prior_logvar,
            eps=eps,
            num_samples=eps.shape[0],
            event_dims=event_dims_of(mu, logvar, prior_mu, prior_logvar),
        )

    def distribution(self, mu, logvar, prior_mu, prior_logvar, eps):
        z = Normal(mu, torch.exp(0.5 * logvar)).loc + torch.exp(0.5 * logvar) * eps
        return z, torch_kl(mu, logvar, prior_mu, prior_logvar, event_dims_of(mu))

    def op_args(self, library, inputs):
        mu, logvar, prior_mu, prior_logvar, eps = inputs
        seed = torch.tensor([123, 456], device=mu.device)
        return [
            (
                mu.clone().requires_grad_(),
                logvar,
                eps,
                None,
                eps.shape[0],
                prior_mu.clone().requires_grad_(),
                prior_logvar,
                2,
            ),
            (mu, logvar, None, seed, eps.shape[0], prior_mu, prior_logvar.clone().requires_grad_(), 0),
        ]

    def backward_op_args(self, args, out_grads):
        return (*out_grads, *args[:4], *args[5:])

    def bad_inputs(self):
        z = torch.zeros
        return [
            (lambda: af.sample_and_kl(z(3, 4), z(3, 4), z(3, 5), z(3, 5)), "do not broadcast together"),
            (
                lambda: torch.ops.aevb_fast.sample_and_kl(
                    z(3, 4), z(3, 4), None, torch.zeros(2).long(), 1, z(3, 4), None
                ),
                "must be given together",
            ),
        ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("event_dims", [0, 1, 3])
def test_every_event_dims_matches_torch_distributions(device, event_dims):
    """event_dims=0 is the elementwise KL (what VDVAE sums itself), 3 a (C, H, W) layer's sum;
    both against torch.distributions in float64, with gradients against the reference's."""
    require_device(device)
    inputs = latents((4, 3, 5, 6), device=tensor_device(device))
    f = functions(device)
    fused = lambda *t: f.gaussian_kl(*t, event_dims=event_dims)  # noqa: E731
    ours = fused(*inputs)
    torch.testing.assert_close(ours, torch_kl(*inputs, event_dims), rtol=1e-10, atol=1e-10)
    assert ours.shape == inputs[0].shape[: 4 - event_dims]
    _, grads, _ = run_with_grads(fused, inputs)
    _, ref_grads, _ = run_with_grads(lambda *t: reference.gaussian_kl(*t, event_dims=event_dims), inputs)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_drawn_noise_with_a_prior_is_the_no_prior_noise(device):
    """The prior changes the KL only: z and the regenerated noise's gradients are those without
    one (same seed), and gradcheck passes with the noise drawn in the kernel."""
    require_device(device)
    mu, logvar, prior_mu, prior_logvar = latents((3, 2, 5), device=tensor_device(device))
    f = functions(device)
    z, kl = f.sample_and_kl(mu, logvar, prior_mu, prior_logvar, num_samples=3, generator=seeded(5), event_dims=2)
    z0, _ = f.sample_and_kl(mu, logvar, num_samples=3, generator=seeded(5), event_dims=2)
    torch.testing.assert_close(z, z0, rtol=0, atol=0)
    torch.testing.assert_close(kl, torch_kl(mu, logvar, prior_mu, prior_logvar, 2))
    fn = lambda *t: f.sample_and_kl(*t, num_samples=3, generator=seeded(5), event_dims=0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, [t.clone().requires_grad_() for t in (mu, logvar, prior_mu, prior_logvar)])


def test_no_prior_and_a_standard_prior_agree():
    mu, logvar, _, _ = latents((6, 7))
    zeros = torch.zeros_like(mu)
    torch.testing.assert_close(af.gaussian_kl(mu, logvar, zeros, zeros), af.gaussian_kl(mu, logvar))
    # One of the prior's two alone: the other is 0.
    torch.testing.assert_close(af.gaussian_kl(mu, logvar, prior_logvar=zeros), af.gaussian_kl(mu, logvar))
    torch.testing.assert_close(af.gaussian_kl(mu, logvar, mu), af.gaussian_kl(zeros, logvar))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_extreme_log_variances_stay_finite(dtype):
    """Log-variances anywhere in [-80, 80] for both q and p: finite where the true KL is."""
    values = torch.tensor([-80.0, -20.0, 0.0, 20.0, 80.0], dtype=torch.float64)
    logvar, prior_logvar = torch.meshgrid(values, values, indexing="ij")
    logvar, prior_logvar = logvar.reshape(-1, 1), prior_logvar.reshape(-1, 1)
    mu, prior_mu = torch.full_like(logvar, 3.0), torch.full_like(logvar, -2.0)
    truth = reference.gaussian_kl(mu, logvar, prior_mu, prior_logvar)
    representable = truth < torch.finfo(torch.float32 if dtype != torch.float64 else dtype).max
    leaves = [t.to(dtype).requires_grad_() for t in (mu, logvar, prior_mu, prior_logvar)]
    kl = af.gaussian_kl(*leaves)
    assert torch.isfinite(kl[representable]).all() and not kl.isnan().any()
    torch.testing.assert_close(
        kl[representable].double(), truth[representable], rtol=2e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-3
    )
    kl[representable].sum().backward()
    for leaf in leaves:
        assert torch.isfinite(leaf.grad[representable.squeeze(-1)]).all()


def test_kl_divergence_of_two_diagonal_normals_is_fused():
    mu, logvar, prior_mu, prior_logvar = latents((4, 3, 5, 6))
    q, p = DiagonalNormal(mu, logvar, event_dims=3), DiagonalNormal(prior_mu, prior_logvar, event_dims=3)
    with torch.profiler.profile() as prof:
        ours = kl_divergence(q, p)
    assert any(e.name == "aevb_fast::gaussian_kl" for e in prof.events())
    torch.testing.assert_close(ours, torch_kl(mu, logvar, prior_mu, prior_logvar, 3), rtol=1e-10, atol=1e-10)
    # Against torch's own Normal pair, elementwise (event_dims=0), a prior shared by the batch.
    q0, p0 = DiagonalNormal(mu, logvar, event_dims=0), DiagonalNormal(prior_mu[0], prior_logvar[0], event_dims=0)
    theirs = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(prior_mu[0], torch.exp(0.5 * prior_logvar[0])))
    torch.testing.assert_close(kl_divergence(q0, p0), theirs, rtol=1e-10, atol=1e-10)


def copies(fn):
    """How many aten::copy_ calls fn makes."""
    with torch.profiler.profile() as prof:
        fn()
    return sum(e.name == "aten::copy_" for e in prof.events())


@pytest.mark.parametrize("device", ["cpu", "emulated_cuda"])
def test_a_shared_prior_is_read_without_a_copy(device):
    """A prior shared by the batch (C, H, W), a per-example (B, 1, 1, 1) log-variance and a scalar
    prior log-variance reach the kernels as they are: no copy of the full shape. Their gradients
    come back in their own shapes."""
    require_device(device)
    f = functions(device)
    mu, _, prior_mu, prior_logvar = latents((8, 4, 6, 6), dtype=torch.float32)
    logvar = randn(8, 1, 1, 1, dtype=torch.float32, seed=9)
    for args in ((mu, logvar, prior_mu[0], prior_logvar[0]), (mu, logvar, prior_mu, torch.tensor(-1.0))):
        assert copies(lambda: f.gaussian_kl(*args, event_dims=3)) == 0
        assert copies(lambda: f.sample_and_kl(*args, num_samples=2, event_dims=3)) == 0
        leaves = [t.clone().requires_grad_() for t in args]
        z, kl = f.sample_and_kl(*leaves, eps=randn(8, 4, 6, 6, dtype=torch.float32, seed=5), event_dims=3)
        ref_leaves = [t.clone().requires_grad_() for t in args]
        ref_z, ref_kl = reference.sample_and_kl(
            *ref_leaves, eps=randn(8, 4, 6, 6, dtype=torch.float32, seed=5), event_dims=3
        )
        torch.testing.assert_close(kl, ref_kl)
        (z.sum() + kl.sum()).backward()
        (ref_z.sum() + ref_kl.sum()).backward()
        for leaf, ref_leaf in zip(leaves, ref_leaves, strict=True):
            assert leaf.grad.shape == leaf.shape
            torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-4, atol=1e-4)


def vdvae_draw(mu, logsigma):
    """VDVAE's draw_gaussian_diag_samples (its parameters are log-sigmas)."""
    return torch.exp(logsigma) * torch.randn_like(mu) + mu


def vdvae_kl(mu1, mu2, logsigma1, logsigma2):
    """VDVAE's gaussian_analytical_kl, per element."""
    return -0.5 + logsigma2 - logsigma1 + 0.5 * (logsigma1.exp() ** 2 + (mu1 - mu2) ** 2) / (logsigma2.exp() ** 2)


def saved_bytes(fn):
    """The bytes that the tensors saved for backward by fn() keep alive: each storage once, whole
    (a saved channel slice keeps its whole conv output)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("op", ["sample_and_kl", "gaussian_kl"])
def test_channel_slices_keep_no_more_memory_than_vdvae(op):
    # VDVAE's DecBlock.sample: q's mean and log-sigma are the two halves of a conv output's
    # channels, p's the first 2 x zdim of a prior conv's (2 zdim + width channels). Saving the
    # slices as given would keep both whole conv outputs alive until the backward (issue 34).
    batch, zdim, width, size = 4, 16, 64, 8
    enc = torch.randn(batch, 2 * zdim, size, size, requires_grad=True)
    prior = torch.randn(batch, 2 * zdim + width, size, size, requires_grad=True)
    slice_bytes = batch * zdim * size * size * 4

    def block(fused):
        enc_out, prior_out = enc * 1.0, prior * 1.0  # conv outputs: intermediates, not leaves
        qm, qv = enc_out.chunk(2, dim=1)
        pm, pv = prior_out[:, :zdim], prior_out[:, zdim : 2 * zdim]
        if not fused:
            return (vdvae_draw(qm, qv), vdvae_kl(qm, pm, qv, pv)) if op == "sample_and_kl" else vdvae_kl(qm, pm, qv, pv)
        return getattr(af, op)(qm, 2 * qv, pm, 2 * pv, event_dims=0)  # the README's one-line swap

    fused, formula = saved_bytes(lambda: block(True)), saved_bytes(lambda: block(False))
    assert fused <= formula, (fused, formula)
    assert fused <= 4 * slice_bytes + 64, (fused, 4 * slice_bytes)  # the four slices, compact, and the seed
    # The same values and gradients as from compact inputs.
    enc_out, prior_out = enc.detach() * 1.0, prior.detach() * 1.0
    qm, qv = enc_out.chunk(2, dim=1)
    args = (qm, 2 * qv, prior_out[:, :zdim], 2 * prior_out[:, zdim : 2 * zdim])
    sliced = [a.requires_grad_() if a.is_leaf else a.detach().requires_grad_() for a in args]
    compact = [a.detach().contiguous().requires_grad_() for a in args]
    outs = [af.gaussian_kl(*t, event_dims=0).sum() for t in (sliced, compact)]
    torch.testing.assert_close(outs[0], outs[1])
    grads = [torch.autograd.grad(o, t) for o, t in zip(outs, (sliced, compact))]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_a_fixed_size_view_of_a_dynamic_size_tensor_compiles():
    # Under torch.compile(dynamic=True), h[0] of an (s0, 4, 8) tensor has fixed sizes but a storage
    # of symbolic size: deciding whether to save it compact must not ask for that size as a number.
    def f(h):
        mu, logvar = h[0].chunk(2, dim=-1)
        return af.gaussian_kl(mu, logvar, event_dims=1).sum()

    compiled = torch.compile(f, dynamic=True, fullgraph=True)
    for rows in (5, 7):
        h = torch.randn(rows, 4, 8, requires_grad=True)
        value = compiled(h)
        value.backward()
        expected = reference.gaussian_kl(*h.detach()[0].chunk(2, dim=-1), event_dims=1).sum()
        torch.testing.assert_close(value.detach(), expected)
        assert h.grad is not None and torch.isfinite(h.grad).all()
