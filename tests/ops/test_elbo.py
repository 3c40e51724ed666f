import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

import aevb_fast as af
from aevb_fast.elbo import LIKELIHOODS, log_importance_weights
from aevb_fast.models import VAE, BernoulliDecoder, Encoder, GaussianDecoder
from testing import rand, randn, seeded

B, D, J, H = 6, 12, 3, 8


def decoders():
    torch.manual_seed(0)
    return {
        "bernoulli": BernoulliDecoder(J, H, D, init_std=0.3).double(),
        "gaussian": GaussianDecoder(J, H, D, init_std=0.3).double(),
    }


def plain_bound(x, mu, logvar, eps, decoder, likelihood, estimator):
    """The same estimators written with torch.distributions, on the same noise."""
    sigma = torch.exp(0.5 * logvar)
    z = mu + sigma * eps
    out = decoder(z.reshape(-1, J))
    if likelihood == "bernoulli":
        logits = out.reshape(*z.shape[:2], D)
        log_px = (x * logits - F.softplus(logits)).sum(-1)
    else:
        mean, lv = (t.reshape(*z.shape[:2], D) for t in out)
        log_px = Normal(mean, torch.exp(0.5 * lv)).log_prob(x).sum(-1)
    if estimator == "analytic":
        return log_px.mean(0) - kl_divergence(Normal(mu, sigma), Normal(0.0, 1.0)).sum(-1)
    log_w = log_px + Normal(0.0, 1.0).log_prob(z).sum(-1) - Normal(mu, sigma).log_prob(z).sum(-1)
    if estimator == "generic":
        return log_w.mean(0)
    return torch.logsumexp(log_w, 0) - math.log(z.shape[0])


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("estimator", ["analytic", "generic", "iwae"])
@pytest.mark.parametrize("num_samples", [1, 4])
def test_matches_plain_pytorch(likelihood, estimator, num_samples):
    decoder = decoders()[likelihood]
    x = rand(B, D, seed=0).bernoulli() if likelihood == "bernoulli" else rand(B, D, seed=0)
    mu, logvar = randn(B, J, seed=1), randn(B, J, seed=2, scale=0.5)
    eps = randn(num_samples, B, J, seed=3)
    results = []
    for fn in (
        lambda m, v: af.elbo(
            x,
            m,
            v,
            decoder,
            likelihood=likelihood,
            num_samples=num_samples,
            estimator=estimator,
            reduction="none",
            eps=eps,
        ),
        lambda m, v: plain_bound(x, m, v, eps, decoder, likelihood, estimator),
    ):
        m, v = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
        decoder.zero_grad()
        bound = fn(m, v)
        (bound * torch.linspace(0.5, 1.5, B, dtype=torch.float64)).sum().backward()
        results.append((bound.detach(), m.grad, v.grad, [p.grad.clone() for p in decoder.parameters()]))
    (b1, gm1, gv1, gp1), (b2, gm2, gv2, gp2) = results
    assert b1.shape == (B,)
    for a, b in [(b1, b2), (gm1, gm2), (gv1, gv2), *zip(gp1, gp2)]:
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_reductions_and_loss_module():
    decoder = decoders()["bernoulli"]
    x, mu, logvar = rand(B, D).bernoulli(), randn(B, J, seed=1), randn(B, J, seed=2)
    eps = randn(1, B, J, seed=3)
    per_point = af.elbo(x, mu, logvar, decoder, reduction="none", eps=eps)
    torch.testing.assert_close(af.elbo(x, mu, logvar, decoder, reduction="sum", eps=eps), per_point.sum())
    torch.testing.assert_close(af.elbo(x, mu, logvar, decoder, eps=eps), per_point.mean())
    loss = af.ELBOLoss(likelihood="bernoulli")
    torch.manual_seed(5)
    value = loss(x, mu, logvar, decoder)
    torch.manual_seed(5)
    torch.testing.assert_close(value, -af.elbo(x, mu, logvar, decoder))
    assert "beta=1.0" in repr(loss)


def test_beta_and_free_bits():
    decoder = decoders()["bernoulli"]
    x, mu, logvar = rand(B, D).bernoulli(), randn(B, J, seed=1), randn(B, J, seed=2)
    eps = randn(1, B, J, seed=3)
    kl = af.gaussian_kl(mu, logvar)
    full = af.elbo(x, mu, logvar, decoder, reduction="none", eps=eps)
    half = af.elbo(x, mu, logvar, decoder, reduction="none", eps=eps, beta=0.5)
    torch.testing.assert_close(half - full, 0.5 * kl)
    # Free bits above every dimension's KL: each counts as exactly free_bits nats.
    lam = 100.0
    fb = af.elbo(x, mu, logvar, decoder, reduction="none", eps=eps, free_bits=lam)
    torch.testing.assert_close(fb - full, kl - J * lam)


def test_generic_and_analytic_agree_in_expectation():
    # One data point, many samples: the Monte Carlo KL of estimator A averages to the analytic KL
    # of estimator B, so the two bounds agree within the sampling error.
    decoder = decoders()["gaussian"]
    x, mu, logvar = rand(1, D), randn(1, J, seed=1, scale=0.5), randn(1, J, seed=2, scale=0.3)
    L = 40000
    eps = randn(L, 1, J, seed=4)
    options = dict(likelihood="gaussian", num_samples=L, eps=eps)
    analytic = af.elbo(x, mu, logvar, decoder, estimator="analytic", **options)
    generic = af.elbo(x, mu, logvar, decoder, estimator="generic", **options)
    # The standard error of the generic estimate, from its per-sample terms (L separate draws).
    terms = torch.stack(
        [plain_bound(x, mu, logvar, eps[i : i + 1], decoder, "gaussian", "generic") for i in range(0, L, 100)]
    )
    stderr = terms.std().item() / math.sqrt(L)
    assert abs(generic.item() - analytic.item()) < 4 * stderr


def test_iwae_is_tighter_with_more_samples():
    decoder = decoders()["bernoulli"]
    x, mu, logvar = rand(B, D).bernoulli(), randn(B, J, seed=1), randn(B, J, seed=2)
    torch.manual_seed(0)
    bounds = [af.elbo(x, mu, logvar, decoder, num_samples=k, estimator="iwae").item() for k in (1, 10, 1000)]
    assert bounds[0] < bounds[1] < bounds[2]
    eps = randn(1, B, J, seed=3)
    torch.testing.assert_close(
        af.elbo(x, mu, logvar, decoder, estimator="iwae", eps=eps),
        af.elbo(x, mu, logvar, decoder, estimator="generic", eps=eps),
    )


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(likelihood="poisson"), "likelihood must be"),
        (dict(estimator="hmc"), "estimator must be"),
        (dict(reduction="max"), "reduction must be"),
        (dict(num_samples=0), "num_samples must be"),
        (dict(beta=-1.0), "beta must be"),
        (dict(estimator="iwae", beta=0.5), "beta=1.0"),
        (dict(estimator="generic", free_bits=0.5), "free_bits needs"),
        (dict(eps=randn(B, J)), r"eps must have shape \(num_samples, B, J\) = \(1, 6, 3\).*eps\[None\]"),
        (dict(eps=randn(2, B, J), num_samples=3), r"= \(3, 6, 3\), got \(2, 6, 3\)"),
    ],
)
def test_bad_options(options, match):
    decoder = decoders()["bernoulli"]
    with pytest.raises(ValueError, match=match):
        af.elbo(rand(B, D), randn(B, J), randn(B, J), decoder, **options)


def test_decoder_output_is_checked():
    with pytest.raises(ValueError, match="Gaussian decoder must return"):
        af.elbo(rand(B, D), randn(B, J), randn(B, J), decoders()["bernoulli"], likelihood="gaussian")


class CompactVarianceDecoder(torch.nn.Module):
    """z -> (mean, logvar), the mean of shape (N, *layout), the log-variance a learned tensor of
    shape ``compact`` (distinct values) that broadcasts against it, or, with ``full``, that
    tensor expanded to the mean's shape: the two must give one bound."""

    def __init__(self, layout, compact, full=False):
        super().__init__()
        torch.manual_seed(0)
        self.layout, self.full = layout, full
        self.mean = torch.nn.Linear(J, math.prod(layout)).double()
        size = math.prod(c for c in compact if c > 0)
        self.logvar = torch.nn.Parameter(torch.linspace(-1.5, 0.5, max(size, 1), dtype=torch.float64).reshape(compact))

    def forward(self, z):
        mean = torch.sigmoid(self.mean(z)).reshape(-1, *self.layout)
        return mean, self.logvar.expand_as(mean) if self.full else self.logvar


# (decoder layout, log-variance shape): L = 4 samples of B = 1 point, so L * B = 4 = C, which a
# per-channel log-variance must not be taken for a row each.
COMPACT_CASES = [
    ((4, 2, 2), ()),  # one learned value
    ((4, 2, 2), (1, 1, 1, 1)),
    ((4, 2, 2), (4, 1, 1)),  # per channel, C = L * B
    ((4, 2, 2), (4, 1, 1, 1)),  # a row each
    ((4, 2, 2), (4, 4, 1, 1)),  # a row and a channel each
    ((4, 2, 2), (1, 4, 2, 2)),  # per element, shared by the rows
    ((16,), (4, 1)),  # a flat decoder on image data: a row each
    ((16,), (16,)),  # a flat decoder on image data: per pixel, shared
]


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("layout,compact", COMPACT_CASES, ids=[f"{a}-{b}" for a, b in COMPACT_CASES])
def test_a_compact_log_variance_gives_the_full_one_s_bound(backend, layout, compact):
    # A decoder returning a scalar or per-channel log-variance crashed in the ELBO's reshape.
    x = rand(1, 4, 2, 2, seed=0)
    mu, logvar, eps = randn(1, J, seed=1), randn(1, J, seed=2, scale=0.5), randn(4, 1, J, seed=3)
    results = []
    for full in (False, True):
        decoder = CompactVarianceDecoder(layout, compact, full)
        bound = af.elbo(
            x, mu, logvar, decoder, likelihood="gaussian", num_samples=4, eps=eps, backend=backend, reduction="none"
        )
        bound.sum().backward()
        results.append((bound.detach(), decoder.mean.weight.grad, decoder.logvar.grad))
    for compact_result, full_result in zip(*results):
        torch.testing.assert_close(compact_result, full_result, rtol=1e-12, atol=0)


def test_a_log_variance_that_fits_neither_is_a_clear_error():
    decoder = CompactVarianceDecoder((16,), (8,))
    with pytest.raises(ValueError, match=r"logvar has shape \(8,\), which its mean of shape \(4, 16\) does not"):
        af.elbo(rand(1, 4, 2, 2), randn(1, J), randn(1, J), decoder, likelihood="gaussian", num_samples=4)


def test_vae_paper_model_and_compile():
    torch.manual_seed(0)
    model = VAE.paper(data_dim=D, hidden=H, latent=J)
    assert isinstance(model.encoder, Encoder) and isinstance(model.decoder, BernoulliDecoder)
    # N(0, 0.01^2) initialisation.
    weights = torch.cat([p.flatten() for p in model.parameters()])
    assert abs(weights.std().item() - 0.01) < 0.002
    x = torch.rand(B, D).bernoulli()
    compiled = torch.compile(model, fullgraph=True)
    torch.manual_seed(1)
    eager_value = model(x, num_samples=2)
    torch.manual_seed(1)
    compiled_value = compiled(x, num_samples=2)
    assert torch.isfinite(compiled_value) and abs(compiled_value.item() - eager_value.item()) < 1.0
    compiled_value.backward()
    assert all(p.grad is not None for p in model.parameters())
    gaussian = VAE.paper(data_dim=D, hidden=H, latent=J, likelihood="gaussian")
    assert torch.isfinite(gaussian(torch.rand(B, D)))


@pytest.mark.parametrize("estimator", ["analytic", "generic", "iwae"])
def test_reference_backend_gives_the_same_bound(estimator):
    decoder = decoders()["gaussian"]
    x, mu, logvar = rand(B, D), randn(B, J, seed=1), randn(B, J, seed=2, scale=0.5)
    eps = randn(3, B, J, seed=3)
    options = dict(likelihood="gaussian", num_samples=3, estimator=estimator, eps=eps, reduction="none")
    torch.testing.assert_close(
        af.elbo(x, mu, logvar, decoder, backend="reference", **options),
        af.elbo(x, mu, logvar, decoder, **options),
        rtol=1e-9,
        atol=1e-9,
    )


def test_log_importance_weights_give_the_iwae_bound():
    decoder = decoders()["bernoulli"]
    x, mu, logvar = rand(B, D).bernoulli(), randn(B, J, seed=1), randn(B, J, seed=2)
    log_w = log_importance_weights(x, mu, logvar, decoder, num_samples=7, generator=seeded(3))
    assert log_w.shape == (7, B)
    expected = af.elbo(x, mu, logvar, decoder, num_samples=7, estimator="iwae", reduction="none", generator=seeded(3))
    torch.testing.assert_close(torch.logsumexp(log_w, 0) - math.log(7), expected)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize(
    "estimator, reduction",
    [("analytic", "mean"), ("analytic", "sum"), ("analytic", "none"), ("generic", "mean"), ("iwae", "none")],
)
def test_fused_head_gives_the_same_bound_and_gradients(likelihood, estimator, reduction):
    # The paper's model with its decoder's head fused into the likelihood, against the decoder
    # called whole (fused_head=False), same noise, in float64.
    torch.manual_seed(0)
    model = VAE.paper(data_dim=D, hidden=H, latent=J, likelihood=likelihood, init_std=0.3).double()
    x = torch.rand(B, D, dtype=torch.float64)
    eps = torch.randn(3, B, J, dtype=torch.float64)
    results = []
    for fused_head in (True, False):
        model.zero_grad()
        value = model(x, num_samples=3, estimator=estimator, reduction=reduction, eps=eps, fused_head=fused_head)
        value.sum().backward()
        results.append([value.detach()] + [p.grad.clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_fused_head_is_used_and_can_be_turned_off(monkeypatch):
    calls = []
    original = af.ops.linear_bernoulli_log_prob
    monkeypatch.setattr(
        af.ops, "linear_bernoulli_log_prob", lambda *a, **k: calls.append(k["reduction"]) or original(*a, **k)
    )
    model = VAE.paper(data_dim=D, hidden=H, latent=J)
    x = torch.rand(B, D).bernoulli()
    model(x)
    model(x, estimator="iwae", num_samples=2)
    model(x, fused_head=False)
    model(x, backend="reference")
    assert calls == ["sum", "none"]


def _spectral_norm(m):
    torch.nn.utils.spectral_norm(m.decoder.head)


def _pruned(m):
    import torch.nn.utils.prune

    torch.nn.utils.prune.l1_unstructured(m.decoder.head, "weight", amount=0.5)


def _parametrized(m):
    torch.nn.utils.parametrizations.weight_norm(m.decoder.head)


def _hooked(m):
    m.decoder.register_forward_hook(lambda module, args, out: out)


def _backward_hooked(m):
    m.decoder.head.register_full_backward_hook(lambda module, grad_in, grad_out: None)


def _fake_quantized(m):
    class FakeQuantizedLinear(torch.nn.Linear):  # as QAT's Linear: its forward changes the weight
        def forward(self, h):
            return F.linear(h, self.weight.round(decimals=1), self.bias)

    head = m.decoder.head
    m.decoder.net[-1] = FakeQuantizedLinear(head.in_features, head.out_features)
    m.decoder.net[-1].load_state_dict(head.state_dict())


def _compiled(m):
    m.decoder = torch.compile(m.decoder, backend="eager")


def _compiled_in_place(m):
    m.decoder.compile(backend="eager")


def _checkpoint_wrapped(m):  # passes attribute lookups through to the decoder
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    m.decoder = checkpoint_wrapper(m.decoder)


def _forward_replaced(m):  # as torch.cuda.make_graphed_callables or a monkeypatch does
    decoder = m.decoder
    decoder.forward = lambda z: decoder.net(z)


def _fusion_turned_off_on_the_object(m):
    m.decoder.fusable_head = None


def _hooked_globally(m):
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: out)
    return handle.remove


@pytest.mark.parametrize(
    "wrap",
    [
        _spectral_norm,
        _pruned,
        _parametrized,
        _hooked,
        _backward_hooked,
        _fake_quantized,
        _compiled,
        _compiled_in_place,
        _checkpoint_wrapped,
        _forward_replaced,
        _fusion_turned_off_on_the_object,
        _hooked_globally,
    ],
)
def test_a_decoder_with_hooks_or_wrappers_is_called_whole(monkeypatch, wrap):
    """The fused head reads head.weight and calls neither the decoder nor its head: with anything
    that runs when they are called (a hook, a parametrization, a subclass's forward, a compiled
    wrapper), fusing would leave it out without a word (a spectrally normed head never trained).
    Such a decoder is called whole, and the bound equals fused_head=False's."""
    calls = []
    original = af.ops.linear_bernoulli_log_prob
    monkeypatch.setattr(af.ops, "linear_bernoulli_log_prob", lambda *a, **k: calls.append(1) or original(*a, **k))
    torch.manual_seed(0)
    model = VAE.paper(data_dim=D, hidden=H, latent=J, init_std=0.3)
    undo = wrap(model)
    try:
        x, eps = torch.rand(B, D).bernoulli(), torch.randn(1, B, J)
        state = copy.deepcopy(model.state_dict())  # spectral norm's power iteration updates it
        value = model(x, eps=eps)
        value.backward()
        assert calls == []
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        model.load_state_dict(state)
        unfused = model(x, eps=eps, fused_head=False)
        unfused.backward()
        torch.testing.assert_close(value, unfused, rtol=0, atol=0)
        for a, p in zip(grads, model.parameters(), strict=True):
            torch.testing.assert_close(a, p.grad, rtol=0, atol=0)
    finally:
        if undo:
            undo()
    model = VAE.paper(data_dim=D, hidden=H, latent=J)
    model(torch.rand(B, D).bernoulli())
    assert calls == [1]  # a plain decoder is fused


def test_a_lazy_head_is_called_until_it_is_materialised(monkeypatch):
    calls = []
    original = af.ops.linear_bernoulli_log_prob
    monkeypatch.setattr(af.ops, "linear_bernoulli_log_prob", lambda *a, **k: calls.append(1) or original(*a, **k))
    model = VAE.paper(data_dim=D, hidden=H, latent=J)
    model.decoder.net[-1] = torch.nn.LazyLinear(D)
    x = torch.rand(B, D).bernoulli()
    model(x).backward()  # its first call makes the weight, through LazyLinear's pre-hook
    assert calls == [] and type(model.decoder.head) is torch.nn.Linear
    model(x).backward()
    assert calls == [1]


def test_fusion_declared_on_the_object_is_honoured(monkeypatch):
    calls = []
    original = af.ops.linear_bernoulli_log_prob
    monkeypatch.setattr(af.ops, "linear_bernoulli_log_prob", lambda *a, **k: calls.append(1) or original(*a, **k))

    class Plain(BernoulliDecoder):  # a head, but not declared fusable by its class
        fusable_head = None

    decoder = Plain(J, H, D)
    x, mu, logvar = torch.rand(B, D).bernoulli(), torch.zeros(B, J), torch.zeros(B, J)
    af.elbo(x, mu, logvar, decoder)
    assert calls == []
    decoder.fusable_head = "bernoulli"
    af.elbo(x, mu, logvar, decoder)
    assert calls == [1]


def test_a_decoder_with_a_head_is_fused_only_if_it_says_so():
    # A decoder whose forward reads its head's output another way (here: no sigmoid on the
    # mean) must be called whole; only fusable_head opts in.
    class Unsquashed(GaussianDecoder):
        fusable_head = None

        def forward(self, z):
            mean, logvar = self.net(z).chunk(2, dim=-1)
            return mean, logvar

    decoder = Unsquashed(J, H, D)
    f32 = dict(dtype=torch.float32)
    x, mu, logvar, eps = (
        rand(B, D, **f32),
        randn(B, J, **f32),
        randn(B, J, **f32, seed=1),
        randn(1, B, J, **f32, seed=2),
    )
    expected = af.elbo(x, mu, logvar, decoder, likelihood="gaussian", eps=eps, backend="reference")
    torch.testing.assert_close(af.elbo(x, mu, logvar, decoder, likelihood="gaussian", eps=eps), expected)
    empty = af.elbo(x[:0], mu[:0], logvar[:0], VAE.paper(D, H, J).decoder, reduction="none")
    assert empty.shape == (0,)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("estimator", ["analytic", "iwae"])
def test_a_gradient_penalty_through_the_elbo(likelihood, estimator):
    """The squared gradient norm of the bound w.r.t. the encoder's output, itself differentiated
    (create_graph=True), as the reference backend gives it; the forms whose gradients the forward
    made (the default "mean", the fused head) refuse and say how instead."""
    torch.manual_seed(0)
    model = VAE.paper(data_dim=D, hidden=H, latent=J, likelihood=likelihood, init_std=0.3).double()
    x = torch.rand(B, D, dtype=torch.float64)
    mu, logvar = randn(B, J, seed=1).requires_grad_(), randn(B, J, seed=2, scale=0.5).requires_grad_()
    options = dict(likelihood=likelihood, num_samples=3, estimator=estimator, reduction="none", fused_head=False)
    results = []
    for backend, noise in (("fused", dict(generator=seeded(4))), ("reference", {})):
        model.zero_grad()
        if backend == "reference":  # the noise the kernel drew, from its z
            z = af.reparameterize(mu, logvar, num_samples=3, generator=seeded(4))
            noise = dict(eps=((z - mu) / torch.exp(0.5 * logvar)).detach())
        bound = af.elbo(x, mu, logvar, model.decoder, backend=backend, **options, **noise).mean()
        grads = torch.autograd.grad(bound, (mu, logvar), create_graph=True)
        penalty = sum((g**2).sum() for g in grads)
        results.append([penalty.detach(), *torch.autograd.grad(penalty, [mu, logvar, *model.decoder.parameters()])])
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
    if estimator == "analytic":
        for refused in (dict(reduction="mean", fused_head=False), dict(reduction="none", fused_head=True)):
            bound = af.elbo(x, mu, logvar, model.decoder, likelihood=likelihood, **refused).mean()
            with pytest.raises(RuntimeError, match=r"double backward .*elbo\(\.\.\., reduction='none', fused_head"):
                torch.autograd.grad(bound, (mu, logvar), create_graph=True)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("estimator, reduction", [("analytic", "mean"), ("analytic", "sum"), ("iwae", "none")])
def test_the_gradient_for_the_data_is_whole(likelihood, estimator, reduction):
    """d bound / d x (an attack on the input, a saliency map) through a model with a fused head:
    the head gives x no gradient, so elbo leaves it unfused when x requires one."""
    torch.manual_seed(0)
    model = VAE.paper(data_dim=D, hidden=H, latent=J, likelihood=likelihood, init_std=0.3).double()
    grads = []
    for backend in ("fused", "reference"):
        x = torch.rand(B, D, dtype=torch.float64, generator=seeded(1)).requires_grad_()
        eps = randn(2, B, J, seed=2)
        bound = model(x, num_samples=2, estimator=estimator, reduction=reduction, backend=backend, eps=eps)
        grads.append(torch.autograd.grad(bound.sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("fused_head", [True, False])
def test_jit_trace_of_the_paper_model_is_quiet_and_generalises(fused_head):
    """torch.jit.trace of VAE.paper: no TracerWarning (the shape checks are skipped while it
    traces, the chunk size is the trace's constant), and the trace runs other batch sizes as
    eager does under the same seed."""
    import warnings

    torch.manual_seed(0)

    class Bound(torch.nn.Module):  # a module, so that the trace takes the parameters as such
        def __init__(self):
            super().__init__()
            self.vae = VAE.paper(data_dim=D, hidden=H, latent=J, init_std=0.3)

        def forward(self, x):
            return self.vae(x, fused_head=fused_head)

    forward = Bound()
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(forward, (torch.rand(B, D).bernoulli(),), check_trace=False)
    for batch in (B, 2 * B + 1):
        x = torch.rand(batch, D).bernoulli()
        torch.manual_seed(1)
        want = forward(x)
        torch.manual_seed(1)
        torch.testing.assert_close(traced(x), want)
