"""Every operator inside torch.compile(fullgraph=True) and torch.export: no graph break, the
same values and gradients as eager, fresh noise at every call."""

import torch

import aevb_fast as af
from testing import rand, randn


def vae_terms(mu, logvar, x, eps):
    z, kl = af.sample_and_kl(mu, logvar, eps=eps, num_samples=2)
    z1 = af.reparameterize(mu, logvar, eps=eps[0])
    # A toy decoder: the data-sized logits/means are a fixed function of z.
    logits = z.repeat(1, 1, 4)
    bern = af.bernoulli_log_prob(x, logits)
    gauss = af.gaussian_log_prob(x, torch.sigmoid(logits), 0.1 * logits, event_dims=1)
    return bern.mean(0) + gauss.mean(0) - kl - af.gaussian_kl(mu, logvar) + z1.sum(-1)


def make_inputs():
    return (
        randn(8, 5, dtype=torch.float32),
        randn(8, 5, dtype=torch.float32, seed=1, scale=0.5),
        rand(8, 20, dtype=torch.float32, seed=2),
        randn(2, 8, 5, dtype=torch.float32, seed=3),
    )


def test_compiled_matches_eager():
    compiled = torch.compile(vae_terms, fullgraph=True, backend="inductor")
    results = []
    for fn in (vae_terms, compiled):
        mu, logvar, x, eps = make_inputs()
        mu.requires_grad_(), logvar.requires_grad_()
        out = fn(mu, logvar, x, eps)
        (out * torch.linspace(0.5, 2.0, out.numel())).sum().backward()
        results.append((out.detach(), mu.grad, logvar.grad))
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-5)


def test_compiled_draws_fresh_noise():
    @torch.compile(fullgraph=True)
    def sample(mu, logvar):
        return af.sample_and_kl(mu, logvar, num_samples=2)[0]

    mu, logvar = torch.zeros(16, 4), torch.zeros(16, 4)
    torch.manual_seed(0)
    a, b = sample(mu, logvar), sample(mu, logvar)
    assert not torch.equal(a, b)
    assert abs(a.std().item() - 1) < 0.3
    # The seed is drawn from torch's generator in the compiled graph as in eager (inductor's own
    # RNG would take randint's overload without a generator): the same noise under the same seed.
    torch.manual_seed(0)
    assert torch.equal(af.sample_and_kl(mu, logvar, num_samples=2)[0], a)


def test_export():
    class Likelihood(torch.nn.Module):
        def forward(self, x, logits, mean, logvar):
            return (
                af.bernoulli_log_prob(x, logits) + af.gaussian_log_prob(x, mean, logvar) + af.gaussian_kl(mean, logvar)
            )

    args = (rand(4, 6), randn(4, 6, seed=1), randn(4, 6, seed=2), randn(4, 6, seed=3))
    exported = torch.export.export(Likelihood(), args)
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"aevb_fast.bernoulli_log_prob.default", "aevb_fast.gaussian_kl.default"} <= targets
    torch.testing.assert_close(exported.module()(*args), Likelihood()(*args))


def test_compiled_backward_of_dense_non_contiguous_inputs():
    """A decoder's (B, L, D) output transposed to (L, B, D), and a channels_last image: the
    backward kernels return contiguous gradients, and the compiled graph must read them so."""

    def terms(x, logits, mean, image, image_logits):
        return (
            af.bernoulli_log_prob(x, logits.transpose(0, 1)).sum()
            + af.gaussian_log_prob(x, mean.transpose(0, 1), -1.0).sum()
            + af.bernoulli_log_prob(image, image_logits, event_dims=3).sum()
        )

    def inputs():
        x = (rand(4, 6, seed=0, dtype=torch.float32) > 0.5).float()
        logits, mean = randn(4, 2, 6, seed=1, dtype=torch.float32), randn(4, 2, 6, seed=2, dtype=torch.float32)
        image = (rand(2, 3, 4, 5, seed=3, dtype=torch.float32) > 0.5).float().to(memory_format=torch.channels_last)
        image_logits = randn(2, 3, 4, 5, seed=4, dtype=torch.float32).to(memory_format=torch.channels_last)
        return x, logits.requires_grad_(), mean.requires_grad_(), image, image_logits.requires_grad_()

    torch.compiler.reset()
    results = []
    for fn in (terms, torch.compile(terms, fullgraph=True)):
        args = inputs()
        fn(*args).backward()
        results.append([args[1].grad, args[2].grad, args[4].grad])
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_export_with_a_dynamic_batch():
    """A dynamic batch exports, and the program runs at another batch size: a fixed log-variance
    with samples ((L, B, D) means, L = 2) once added the guard batch != L."""

    class Terms(torch.nn.Module):
        def forward(self, x, mean, mu, logvar):
            _, kl = af.sample_and_kl(mu, logvar, num_samples=2)
            return af.gaussian_log_prob(x, mean, -1.0).mean(0) + af.bernoulli_log_prob(x, mean).mean(0) - kl

    batch = torch.export.Dim("batch", min=1, max=1024)
    args = (rand(6, 10), randn(2, 6, 10, seed=1), randn(6, 3, seed=2), randn(3, seed=3))
    exported = torch.export.export(Terms(), args, dynamic_shapes=({0: batch}, {1: batch}, {0: batch}, None))
    other = (rand(2, 10), randn(2, 2, 10, seed=4), randn(2, 3, seed=5), randn(3, seed=6))
    torch.testing.assert_close(exported.module()(*other), Terms()(*other))


def test_compile_caches_are_keyed_by_this_build(monkeypatch):
    """A graph compiled before a rebuild must not come back from torch.compile's disk cache: the
    caches' key tag carries a stamp of this build, once, beside the user's own tag."""
    from aevb_fast import _C
    from aevb_fast.ops import tag_compile_caches

    stamp = next(t for t in torch.compiler.config.cache_key_tag.split("+") if t.startswith("aevb_fast._C-"))
    monkeypatch.setattr(torch.compiler.config, "cache_key_tag", "users-own")
    tag_compile_caches(_C)
    tag_compile_caches(_C)
    assert torch.compiler.config.cache_key_tag == f"users-own+{stamp}"


def test_compiled_backward_runs_the_kernels():
    """A compiled graph's backward calls the backward operators (create_graph=False there), not
    the slower differentiable formulas a create_graph=True backward takes."""
    from functorch.compile import make_boxed_func
    from torch._functorch.aot_autograd import aot_function

    graphs = []

    def keep(graph, _):
        graphs.append(graph)
        return make_boxed_func(graph.forward)

    compiled = aot_function(vae_terms, fw_compiler=keep, bw_compiler=keep)
    mu, logvar, x, eps = make_inputs()
    compiled(mu.requires_grad_(), logvar.requires_grad_(), x, eps).sum().backward()
    ops = {str(n.target) for n in graphs[-1].graph.nodes if n.op == "call_function"}
    expected = {f"aevb_fast.{op}_backward.default" for op in ("sample_and_kl", "bernoulli_log_prob", "gaussian_kl")}
    assert expected <= ops, ops
