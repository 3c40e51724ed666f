"""aevb_fast.distributions against torch.distributions in float64: values, gradients, shapes,
broadcasting, expand, validate_args, and the KL registry."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.distributions as D

from aevb_fast.distributions import BernoulliLogits, DiagonalNormal, StandardNormal

F64 = torch.float64


def leaves(*shapes, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def torch_normal(loc, logvar, event_dims=1):
    return D.Independent(D.Normal(loc, torch.exp(0.5 * logvar)), event_dims)


def assert_same_values_and_grads(ours, theirs, inputs):
    torch.testing.assert_close(ours, theirs)
    weight = torch.randn(ours.shape, dtype=ours.dtype)
    got = torch.autograd.grad((ours * weight).sum(), inputs, allow_unused=True)
    want = torch.autograd.grad((theirs * weight).sum(), inputs, allow_unused=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


# ---- DiagonalNormal -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value_shape",
    [(4, 3), (5, 4, 3), (2, 5, 4, 3), (3,), (2, 1, 3), (1, 3), (1, 1, 3)],
    ids=[
        "same",
        "samples",
        "two-sample-dims",
        "broadcast-row",
        "broadcast-batch",
        "one-point",
        "one-point-with-sample-dim",
    ],
)
def test_diagonal_normal_log_prob_matches_torch(value_shape):
    loc, logvar = leaves((4, 3), (4, 3))
    (value,) = leaves(value_shape, seed=1)
    ours = DiagonalNormal(loc, logvar).log_prob(value)
    theirs = torch_normal(loc, logvar).log_prob(value)
    assert ours.shape == theirs.shape
    assert_same_values_and_grads(ours, theirs, [loc, logvar, value])


def test_diagonal_normal_of_images_is_a_gaussian_likelihood():
    mean, logvar = leaves((2, 3, 4, 5), (2, 3, 4, 5))
    (x,) = leaves((2, 3, 4, 5), seed=2)
    q = DiagonalNormal(mean, logvar, event_dims=3)
    assert q.batch_shape == (2,) and q.event_shape == (3, 4, 5)
    assert_same_values_and_grads(q.log_prob(x), torch_normal(mean, logvar, 3).log_prob(x), [mean, logvar])
    assert_same_values_and_grads(q.entropy(), torch_normal(mean, logvar, 3).entropy(), [logvar])


def test_diagonal_normal_moments_entropy_and_shapes():
    loc, logvar = leaves((6, 4), (6, 4))
    q, t = DiagonalNormal(loc, logvar), torch_normal(loc, logvar)
    assert (q.batch_shape, q.event_shape) == (t.batch_shape, t.event_shape) == ((6,), (4,))
    for name in ("mean", "mode", "stddev", "variance"):
        torch.testing.assert_close(getattr(q, name), getattr(t, name))
    assert_same_values_and_grads(q.entropy(), t.entropy(), [logvar])
    # loc and logvar broadcast against each other, as torch's parameters do
    assert DiagonalNormal(loc, torch.zeros(4, dtype=F64)).batch_shape == (6,)


def test_diagonal_normal_warns_of_scales_passed_as_log_variances():
    # torch's Normal takes (loc, scale); a network that gives a scale, passed on unchanged,
    # trains another model: every "logvar" > 0 says so. Not an error: variances above 1 are legal.
    loc = torch.randn(8, 16)
    scale = torch.nn.functional.softplus(torch.randn(8, 16))
    with pytest.warns(UserWarning, match=r"if these are standard deviations .* 2 \* torch.log\(scale\)"):
        DiagonalNormal(loc, scale, validate_args=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DiagonalNormal(loc, scale, validate_args=False)  # the user says these are log-variances
        DiagonalNormal(loc, torch.randn(8, 16), validate_args=True)  # log-variances of both signs
        DiagonalNormal(loc, torch.full((8, 16), 0.7), validate_args=True)  # a fixed variance
        DiagonalNormal(loc, 0.7, validate_args=True)
        DiagonalNormal(loc[:2, :4], scale[:2, :4], validate_args=True)  # too few values to tell
        # a learned per-channel log-variance of 0-255 images: counted as given, not as broadcast
        DiagonalNormal(torch.randn(8, 3, 4, 4), torch.rand(3, 1, 1) + 5, event_dims=3, validate_args=True)
        DiagonalNormal(loc[:2, :4], torch.zeros(2, 4), validate_args=True)  # the standard normal
    # Normal(0, 1) ported literally: a prior of variance e, whatever its size.
    for size in [(5,), (8, 16)]:
        with pytest.warns(UserWarning, match="logvar is 1 everywhere, a variance of e"):
            DiagonalNormal(torch.zeros(size), torch.ones(size), validate_args=True)


def test_diagonal_normal_rsample_is_reparameterised_and_seeded():
    loc, logvar = leaves((300, 8), (300, 8))
    q = DiagonalNormal(loc, logvar)
    torch.manual_seed(3)
    z = q.rsample((5,))
    torch.manual_seed(3)
    assert torch.equal(z, q.rsample((5,)))
    assert z.shape == (5, 300, 8) and q.rsample().shape == (300, 8) and q.rsample((2, 3)).shape == (2, 3, 300, 8)
    assert q.rsample((0,)).shape == (0, 300, 8)
    eps = (z - loc) / torch.exp(0.5 * logvar)
    assert abs(eps.mean().item()) < 0.05 and abs(eps.std().item() - 1) < 0.05
    grad_loc, grad_logvar = torch.autograd.grad(z.sum(), [loc, logvar])
    torch.testing.assert_close(grad_loc, torch.full_like(loc, 5.0))
    torch.testing.assert_close(grad_logvar, 0.5 * (z - loc).detach().sum(0))
    assert not q.sample((2,)).requires_grad


def test_diagonal_normal_expand_keeps_the_class_and_shares_memory():
    loc, logvar = leaves((1, 3), (1, 3))
    q = DiagonalNormal(loc, logvar, validate_args=True).expand((4, 1))
    assert type(q) is DiagonalNormal and q.batch_shape == (4, 1) and q.event_shape == (3,)
    assert q.loc.data_ptr() == loc.data_ptr() and q._validate_args
    torch.testing.assert_close(
        q.log_prob(torch.zeros(4, 1, 3, dtype=F64)),
        torch_normal(loc, logvar).expand((4, 1)).log_prob(torch.zeros(4, 1, 3, dtype=F64)),
    )


def test_diagonal_normal_validate_args():
    loc, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="loc"):
        DiagonalNormal(torch.full((2, 3), float("nan")), logvar, validate_args=True)
    DiagonalNormal(torch.full((2, 3), float("nan")), logvar, validate_args=False)  # not checked
    with pytest.raises(ValueError, match="event_dims"):
        DiagonalNormal(loc, logvar, event_dims=3)
    with pytest.raises(ValueError, match="right-most size of value must match event_shape"):
        DiagonalNormal(loc, logvar, validate_args=True).log_prob(torch.zeros(2, 4))  # torch's own check
    with pytest.raises(TypeError, match="tensors"):
        DiagonalNormal([0.0], logvar)
    with pytest.raises(TypeError, match="one may be a Python number"):
        DiagonalNormal(0.0, -1.0)


def test_diagonal_normal_takes_a_fixed_log_variance_as_a_number():
    (loc,) = leaves((4, 3))
    q = DiagonalNormal(loc, math.log(0.5))  # as the ops take it (an MSE VAE's likelihood); was a TypeError
    value = torch.randn(4, 3, dtype=F64)
    t = torch_normal(loc, torch.full((4, 3), math.log(0.5), dtype=F64))
    assert q.batch_shape == (4,) and q.logvar.dtype == F64
    assert DiagonalNormal(loc, np.float32(math.log(0.5))).logvar[0, 0].item() == pytest.approx(math.log(0.5))
    assert_same_values_and_grads(q.log_prob(value), t.log_prob(value), [loc])


def test_methods_that_are_not_there_say_what_to_use():
    # cdf, icdf, enumerate_support and rsample raised torch's NotImplementedError without a word.
    q, p = DiagonalNormal(torch.zeros(2, 3), torch.zeros(2, 3)), StandardNormal(3)
    for call, use in [
        (lambda: q.cdf(torch.zeros(2, 3)), r"Normal\(q.loc, q.stddev\).cdf"),
        (lambda: q.icdf(torch.zeros(2, 3)), r"Normal\(q.loc, q.stddev\).icdf"),
        (lambda: p.cdf(torch.zeros(3)), r"Normal\(0.0, 1.0\).cdf"),
        (lambda: p.icdf(torch.zeros(3)), r"Normal\(0.0, 1.0\).icdf"),
        (lambda: BernoulliLogits(torch.randn(2, 5)).rsample(), r"sample\(\) draws them"),
        (lambda: BernoulliLogits(torch.randn(2, 5)).enumerate_support(), r"its event is 5 variables \(2\^5 values\)"),
    ]:
        with pytest.raises(NotImplementedError, match=use):
            call()


def test_diagonal_normal_low_precision_gives_float32_log_prob():
    loc, logvar, x = (t.detach().to(torch.bfloat16) for t in leaves((8, 16), (8, 16), (8, 16)))
    ll = DiagonalNormal(loc, logvar).log_prob(x)
    assert ll.dtype == torch.float32
    want = torch_normal(loc.double(), logvar.double()).log_prob(x.double())
    assert (ll.double() - want).abs().max() < 1e-3 * want.abs().max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_entropies_are_float32_sums(dtype):
    # A reduced result of a 16-bit input is float32, as the operators' are: summed in bfloat16,
    # 784 entropies keep 3 digits.
    loc, logvar, logits = (t.detach().to(dtype) for t in leaves((2, 784), (2, 784), (2, 784)))
    for ours, theirs in [
        (DiagonalNormal(loc, logvar), torch_normal(loc.double(), logvar.double())),
        (StandardNormal(784, dtype=dtype), torch_normal(torch.zeros(784, dtype=F64), torch.zeros(784, dtype=F64))),
        (BernoulliLogits(logits), D.Independent(D.Bernoulli(logits=logits.double()), 1)),
    ]:
        entropy = ours.entropy()
        assert entropy.dtype == torch.float32
        torch.testing.assert_close(entropy.double(), theirs.entropy(), rtol=1e-6, atol=1e-4)
    # per element (no event), the dtype stays, as torch's Normal's does
    assert DiagonalNormal(loc, logvar, event_dims=0).entropy().dtype == dtype
    # and so do the log-densities: float32 sums over an event, per element the dtype kept
    assert StandardNormal(784).log_prob(loc).dtype == torch.float32
    torch.testing.assert_close(
        StandardNormal(784).log_prob(loc).double(),
        torch_normal(torch.zeros(784, dtype=F64), torch.zeros(784, dtype=F64)).log_prob(loc.double()),
        rtol=1e-6,
        atol=1e-4,
    )
    assert StandardNormal(()).log_prob(loc).dtype == dtype


def test_bernoulli_logits_mode_is_nan_at_even_odds():
    logits = torch.tensor([[0.0, 2.0, -2.0, -0.0]])
    torch.testing.assert_close(BernoulliLogits(logits).mode, D.Bernoulli(logits=logits).mode, equal_nan=True)
    assert BernoulliLogits(logits).mode.isnan().tolist() == [[True, False, False, True]]


def test_standard_normal_expands_as_a_tensor_does():
    p = StandardNormal(4, batch_shape=(3,))
    assert repr(p) == "StandardNormal(event_shape=(4,), batch_shape=(3,))"  # what a notebook shows
    assert repr(StandardNormal(4)) == "StandardNormal(event_shape=(4,))"
    assert p.expand((2, 3)).batch_shape == (2, 3)
    assert StandardNormal(4, batch_shape=(1,)).expand((5,)).batch_shape == (5,)
    for shape in [(5,), (3, 2), ()]:
        with pytest.raises(RuntimeError, match=r"StandardNormal.expand: batch_shape \(3,\) cannot expand to"):
            p.expand(shape)


def test_empty_batches():
    loc, logvar = torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 3)
    q = DiagonalNormal(loc, logvar)
    assert q.rsample((2,)).shape == (2, 0, 3) and q.log_prob(torch.zeros(0, 3)).shape == (0,)
    assert D.kl_divergence(q, StandardNormal(3)).shape == (0,)
    assert BernoulliLogits(torch.zeros(0, 5)).log_prob(torch.zeros(0, 5)).shape == (0,)


@pytest.mark.parametrize("event_dims", [0, 1, 2])
def test_kl_with_torch_normals_is_the_fused_kl(event_dims, monkeypatch):
    """A prior (or posterior) written with torch.distributions, Normal or Independent(Normal, n),
    meets a DiagonalNormal in the fused KL, both ways, with torch's values and gradients."""
    import aevb_fast

    calls = []
    original = aevb_fast.ops.gaussian_kl
    monkeypatch.setattr(aevb_fast.ops, "gaussian_kl", lambda *a, **k: calls.append(1) or original(*a, **k))
    loc, logvar, p_loc, p_logvar = leaves((4, 2, 3), (4, 2, 3), (2, 3), (4, 2, 3), seed=3)

    def torchs(m, lv):
        normal = D.Normal(m, torch.exp(0.5 * lv))
        return D.Independent(normal, event_dims) if event_dims else normal

    ours, ours_p = DiagonalNormal(loc, logvar, event_dims), DiagonalNormal(p_loc, p_logvar, event_dims)
    for q, p in [(ours, torchs(p_loc, p_logvar)), (torchs(loc, logvar), ours_p)]:
        want = D.kl_divergence(torchs(loc, logvar), torchs(p_loc, p_logvar))
        assert_same_values_and_grads(D.kl_divergence(q, p), want, [loc, logvar, p_loc, p_logvar])
    assert len(calls) == 2
    if event_dims == 0:  # a scalar variable against Normal(0, 1)
        scalar = DiagonalNormal(loc[0, 0, 0], logvar[0, 0, 0], event_dims=0)
        want = D.kl_divergence(D.Normal(loc[0, 0, 0], torch.exp(0.5 * logvar[0, 0, 0])), D.Normal(0.0, 1.0))
        torch.testing.assert_close(D.kl_divergence(scalar, D.Normal(0.0, 1.0)), want)
    # a prior with more batch dims than q's
    wide = (p_loc.expand(5, 4, 2, 3), p_logvar.expand(5, 4, 2, 3))
    got = D.kl_divergence(DiagonalNormal(loc, logvar, event_dims), torchs(*wide))
    torch.testing.assert_close(got, D.kl_divergence(torchs(loc, logvar), torchs(*wide)))
    # event dims that do not match, either way: torch's NotImplementedError, saying what takes part
    mismatched = DiagonalNormal(loc, logvar, event_dims=event_dims + 1)
    for q, p in [(mismatched, torchs(p_loc, p_logvar)), (torchs(p_loc, p_logvar), mismatched)]:
        with pytest.raises(NotImplementedError, match="Independent\\(Normal\\(...\\), n\\) with n the event dims"):
            D.kl_divergence(q, p)


@pytest.mark.parametrize("event_dims", [0, 1, 2])
def test_kl_of_a_torch_normal_to_the_standard_normal_is_the_fused_kl(event_dims, monkeypatch):
    """A guide left as torch's (or Pyro's .to_event) beside StandardNormal: the fused KL with
    torch's values and gradients, not a NotImplementedError (or Pyro's sampled KL)."""
    import aevb_fast

    calls = []
    original = aevb_fast.ops.gaussian_kl
    monkeypatch.setattr(aevb_fast.ops, "gaussian_kl", lambda *a, **k: calls.append(1) or original(*a, **k))
    loc, logvar = leaves((4, 2, 3), (4, 2, 3), seed=5)

    def guide():  # a graph each (the gradients are taken of both)
        normal = D.Normal(loc, torch.exp(0.5 * logvar))
        return D.Independent(normal, event_dims) if event_dims else normal

    event_shape, batch_shape = (4, 2, 3)[3 - event_dims :], (4, 2, 3)[: 3 - event_dims]
    standard = D.Normal(torch.zeros(event_shape, dtype=F64), torch.ones(event_shape, dtype=F64))
    want = D.kl_divergence(guide(), D.Independent(standard, event_dims) if event_dims else standard)
    p = StandardNormal(event_shape, batch_shape if event_dims == 0 else (), dtype=F64)
    assert_same_values_and_grads(D.kl_divergence(guide(), p), want, [loc, logvar])
    assert len(calls) == 1
    with pytest.raises(NotImplementedError, match="with n the event dims of the other"):
        D.kl_divergence(guide(), StandardNormal((5, 4, 2, 3)[2 - event_dims :], dtype=F64))
    scalar = D.Normal(loc[0, 0, 0], torch.exp(0.5 * logvar[0, 0, 0]))
    torch.testing.assert_close(
        D.kl_divergence(scalar, StandardNormal((), dtype=F64)), D.kl_divergence(scalar, D.Normal(0.0, 1.0))
    )


def test_kl_with_torch_scalar_normal_on_another_device():
    # Normal(0., 1.) holds CPU scalars, which torch's own KL takes beside another device's
    # tensors; so does the fused one (meta stands in for CUDA: its operator checks devices too).
    meta = torch.zeros(4, 3, device="meta")
    q = DiagonalNormal(meta, meta, event_dims=0, validate_args=False)  # (validation reads values)
    for kl in (D.kl_divergence(q, D.Normal(0.0, 1.0)), D.kl_divergence(D.Normal(0.0, 1.0), q)):
        assert kl.device.type == "meta" and kl.shape == (4, 3)


# ---- StandardNormal -------------------------------------------------------------------------


def test_standard_normal_matches_torch():
    p = StandardNormal((4,), dtype=F64)
    t = D.Independent(D.Normal(torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64)), 1)
    (z,) = leaves((5, 3, 4))
    assert p.batch_shape == () and p.event_shape == (4,)
    assert_same_values_and_grads(p.log_prob(z), t.log_prob(z), [z])
    torch.testing.assert_close(p.entropy(), t.entropy())
    assert p.rsample((2, 3)).shape == (2, 3, 4) and p.rsample().dtype == F64
    assert StandardNormal(7).event_shape == (7,)
    wide = p.expand((3,))
    assert type(wide) is StandardNormal and wide.batch_shape == (3,) and wide.rsample((2,)).shape == (2, 3, 4)
    assert wide.log_prob(torch.zeros(4, dtype=F64)).shape == (3,)
    torch.testing.assert_close(wide.mean, torch.zeros(3, 4, dtype=F64))
    with pytest.raises(TypeError, match="event_shape"):
        StandardNormal("four")


@pytest.mark.parametrize("validate", [True, False])
def test_standard_normal_log_prob_broadcasts_its_value_as_torch_does(validate):
    # Without validation (the default after a torch.compile) a (4, 10) value against 20 latents
    # summed its 10 values; a (4, 1) one counted one element, not 20.
    p = StandardNormal(20, dtype=F64, validate_args=validate)
    t = D.Independent(D.Normal(torch.zeros(20, dtype=F64), 1.0), 1)
    one = torch.randn(4, 1, dtype=F64)
    if validate:
        with pytest.raises(ValueError):
            p.log_prob(one)  # torch's validation refuses it too
    else:
        torch.testing.assert_close(p.log_prob(one), t.log_prob(one))
    with pytest.raises(ValueError, match=r"value of shape \(4, 10\) does not broadcast|must match event_shape"):
        p.log_prob(torch.randn(4, 10, dtype=F64))
    if not validate:  # a traced log_prob (Pyro's JIT ELBOs) broadcasts as the eager one does
        traced = torch.jit.trace(p.log_prob, (one,), check_trace=False)
        torch.testing.assert_close(traced(one), t.log_prob(one))


# ---- KL -------------------------------------------------------------------------------------


def test_fused_kl_to_the_prior_matches_torch():
    loc, logvar = leaves((6, 5), (6, 5))
    ours = D.kl_divergence(DiagonalNormal(loc, logvar), StandardNormal((5,), dtype=F64))
    theirs = D.kl_divergence(
        torch_normal(loc, logvar), torch_normal(torch.zeros(5, dtype=F64), torch.zeros(5, dtype=F64))
    )
    assert ours.shape == (6,)
    assert_same_values_and_grads(ours, theirs, [loc, logvar])
    # a prior expanded by a plate broadcasts; mismatched events are refused
    assert D.kl_divergence(DiagonalNormal(loc[0], logvar[0]), StandardNormal(5).expand((6,))).shape == (6,)
    with pytest.raises(ValueError, match="event_shape"):
        D.kl_divergence(DiagonalNormal(loc, logvar), StandardNormal(4))


def test_kl_over_several_event_dims():
    loc, logvar = leaves((2, 3, 4), (2, 3, 4))
    ours = D.kl_divergence(DiagonalNormal(loc, logvar, event_dims=2), StandardNormal((3, 4), dtype=F64))
    zeros = torch.zeros(3, 4, dtype=F64)
    theirs = D.kl_divergence(torch_normal(loc, logvar, 2), torch_normal(zeros, zeros, 2))
    assert_same_values_and_grads(ours, theirs, [loc, logvar])


def test_kl_between_two_diagonal_normals_matches_torch():
    loc_q, logvar_q, loc_p, logvar_p = leaves((4, 3), (4, 3), (4, 3), (3,))
    ours = D.kl_divergence(DiagonalNormal(loc_q, logvar_q), DiagonalNormal(loc_p, logvar_p))
    theirs = D.kl_divergence(torch_normal(loc_q, logvar_q), torch_normal(loc_p, logvar_p))
    assert_same_values_and_grads(ours, theirs, [loc_q, logvar_q, loc_p, logvar_p])


# ---- BernoulliLogits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logits_shape,x_shape",
    [((4, 20), (4, 20)), ((5, 4, 20), (4, 20)), ((4, 20), (5, 4, 20)), ((4, 20), (1, 20)), ((5, 4, 20), (1, 1, 20))],
    ids=["same", "samples-of-z", "samples-of-x", "one-point", "one-point-samples"],
)
def test_bernoulli_logits_matches_torch(logits_shape, x_shape):
    (logits,) = leaves(logits_shape)
    x = torch.randint(0, 2, x_shape, generator=torch.Generator().manual_seed(1)).to(F64)
    ours = BernoulliLogits(logits).log_prob(x)
    theirs = D.Independent(D.Bernoulli(logits=logits), 1).log_prob(x)
    assert ours.shape == theirs.shape
    assert_same_values_and_grads(ours, theirs, [logits])


def test_bernoulli_logits_of_intensities_is_minus_the_cross_entropy():
    (logits,) = leaves((4, 20))
    x = torch.rand(4, 20, dtype=F64)
    want = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    assert_same_values_and_grads(BernoulliLogits(logits).log_prob(x), want, [logits])


def test_bernoulli_logits_moments_entropy_sample_expand():
    (logits,) = leaves((3, 2, 5))
    ours, theirs = BernoulliLogits(logits, event_dims=2), D.Independent(D.Bernoulli(logits=logits), 2)
    assert (ours.batch_shape, ours.event_shape) == ((3,), (2, 5))
    for name in ("mean", "mode", "variance"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name))
    torch.testing.assert_close(ours.probs, theirs.base_dist.probs)
    assert_same_values_and_grads(ours.entropy(), theirs.entropy(), [logits])
    sample = ours.sample((4,))
    assert sample.shape == (4, 3, 2, 5) and set(sample.unique().tolist()) <= {0.0, 1.0}
    assert ours.expand((2, 3)).batch_shape == (2, 3)


def test_bernoulli_logits_refuses_probabilities_and_bad_data():
    # validate_args given: torch's default is True, but the first torch.compile in a process
    # turns it off (torch._dynamo sets Distribution.set_default_validate_args(False)).
    # A warning, not an error: an untrained decoder's logits can lie in [0, 1] as well.
    probs = torch.sigmoid(torch.randn(8, 784))
    with pytest.warns(UserWarning, match="if these are probabilities .* trains the wrong objective"):
        BernoulliLogits(probs, validate_args=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BernoulliLogits(probs, validate_args=False)  # the user says these are logits
        BernoulliLogits(probs[:2, :10], validate_args=True)  # too few values to tell
        BernoulliLogits(torch.zeros(8, 784), validate_args=True)  # a zero-initialised output layer's logits
    with pytest.raises(ValueError):
        BernoulliLogits(torch.randn(8, 784), validate_args=True).log_prob(torch.full((8, 784), 2.0))
    with pytest.raises(ValueError, match="event_dims"):
        BernoulliLogits(torch.randn(8, 784), event_dims=-1)


def test_compiled_elbo_with_distributions_has_no_graph_break():
    def loss(mu, logvar, logits_of, x):
        q = DiagonalNormal(mu, logvar, validate_args=False)
        z = q.rsample()
        prior = StandardNormal(q.event_shape, validate_args=False)
        ll = BernoulliLogits(logits_of(z), validate_args=False).log_prob(x)
        return (D.kl_divergence(q, prior) - ll).mean()

    mu, logvar = leaves((8, 4), (8, 4), dtype=torch.float32)
    decoder = torch.nn.Linear(4, 20)
    x = torch.rand(8, 20)
    compiled = torch.compile(loss, fullgraph=True)
    value = compiled(mu, logvar, decoder, x)
    value.backward()
    assert torch.isfinite(value) and mu.grad is not None and decoder.weight.grad is not None
    assert math.isfinite(loss(mu, logvar, decoder, x).item())


def test_a_value_of_another_dtype_promotes_as_torch_does():
    loc, logvar = (t.detach().float() for t in leaves((4, 3), (4, 3)))
    value = torch.randn(4, 3, dtype=F64)
    ours = DiagonalNormal(loc, logvar).log_prob(value)
    assert ours.dtype == F64
    torch.testing.assert_close(ours, torch_normal(loc.double(), logvar.double()).log_prob(value))
    assert BernoulliLogits(torch.randn(2, 5)).log_prob(torch.ones(2, 5, dtype=F64)).dtype == F64


def test_a_scalar_latent_samples_and_has_a_kl():
    """DiagonalNormal(loc, logvar, event_dims=0) with 0-dim parameters (a scalar global latent in
    Pyro) draws, and its KL to another is torch's."""
    loc, logvar = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)
    q, p = DiagonalNormal(loc, logvar, event_dims=0), DiagonalNormal(loc * 0, logvar * 0, event_dims=0)
    assert q.rsample().shape == () and q.sample((5, 2)).shape == (5, 2)
    normal = D.Normal(loc, torch.exp(0.5 * logvar))
    torch.testing.assert_close(D.kl_divergence(q, p), D.kl_divergence(normal, D.Normal(0.0, 1.0)))
    z = q.rsample()
    torch.testing.assert_close(q.log_prob(z), normal.log_prob(z))
    torch.testing.assert_close(q.log_prob(z.expand(3)), normal.log_prob(z.expand(3)))
    coin, x = BernoulliLogits(loc, event_dims=0), torch.tensor(1.0, dtype=torch.float64)
    torch.testing.assert_close(coin.log_prob(x), D.Bernoulli(logits=loc).log_prob(x))


def test_bernoulli_logits_is_discrete_yet_takes_grey_levels():
    """Its support is discrete, as torch's Bernoulli's is (inference that needs a continuous site
    refuses a latent one), and validation still lets intensities in [0, 1] through."""
    dist = BernoulliLogits(torch.randn(3, 4), validate_args=True)
    assert dist.support.is_discrete and D.Bernoulli(logits=torch.zeros(1)).support.is_discrete
    assert dist.support.event_dim == 1
    dist.log_prob(torch.rand(3, 4))
    with pytest.raises(ValueError):
        dist.log_prob(torch.full((3, 4), 1.5))
