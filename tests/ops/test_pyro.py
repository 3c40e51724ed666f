"""aevb_fast's distributions inside Pyro: the tutorial's VAE (examples/pyro_vae.py) trained with
Pyro's distributions and with ours, under Trace_ELBO and TraceMeanField_ELBO."""

import math
from pathlib import Path

import pytest
import torch

pyro = pytest.importorskip("pyro")

from aevb_fast import ops  # noqa: E402
from aevb_fast.contrib.pyro import BernoulliLogits, DiagonalNormal, StandardNormal  # noqa: E402
from testing import data_present, load_script  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pyro_vae.py"


def load_example():
    return load_script("examples/pyro_vae.py")


@pytest.fixture(scope="module")
def example():
    return load_example()


@pytest.fixture(scope="module")
def images(example):
    if not data_present("mnist"):
        pytest.skip("mnist not in $AEVB_FAST_DATA or ../shared/data (see ../shared/data/MANIFEST.txt)")
    return example.load_mnist()[:20000]


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
@pytest.mark.slow
def test_tutorial_vae_trains_alike_with_pyro_and_aevb_fast(example, images, elbo):
    steps, tail = 200, 50
    runs = {dists: example.train(images, dists, elbo, steps, batch_size=128) for dists in ("pyro", "aevb_fast")}
    final = {dists: sum(r["losses"][-tail:]) / tail for dists, r in runs.items()}
    for r in runs.values():
        assert r["losses"][0] > 400 and all(map(math.isfinite, r["losses"]))  # starts near 784 log 2, no NaN/inf
    # Same model, data order and initial weights; only the noise differs (Philox in the kernel vs
    # torch.randn): the mean loss over the last 50 steps agrees within 2%, after falling by > 2x.
    assert final["aevb_fast"] < runs["aevb_fast"]["losses"][0] / 2
    assert abs(final["aevb_fast"] - final["pyro"]) < 0.02 * final["pyro"], final


def test_meanfield_elbo_uses_the_fused_kl(example, monkeypatch):
    images = torch.rand(64, 784)  # needs no MNIST
    calls = []
    fused_kl = ops.gaussian_kl

    def counting_kl(mu, logvar, *args, **kwargs):
        calls.append(tuple(mu.shape))
        return fused_kl(mu, logvar, *args, **kwargs)

    monkeypatch.setattr(ops, "gaussian_kl", counting_kl)
    example.train(images, "aevb_fast", "meanfield", 1, batch_size=16)
    assert calls == [(16, 50)]
    calls.clear()
    example.train(images, "aevb_fast", "trace", 1, batch_size=16)
    assert calls == []  # Trace_ELBO scores samples instead


def test_sites_have_the_shapes_pyro_expects():
    from pyro import poutine

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", StandardNormal(3))
            pyro.sample("x", BernoulliLogits(z.repeat(1, 30)), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", DiagonalNormal(torch.zeros(x.shape[0], 3), torch.zeros(x.shape[0], 3)))

    x = torch.randint(0, 2, (5, 90)).float()
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    for trace in (guide_trace, model_trace):
        trace.compute_log_prob()
        assert trace.nodes["z"]["value"].shape == (5, 3) and trace.nodes["z"]["log_prob"].shape == (5,)
    assert model_trace.nodes["z"]["fn"].batch_shape == (5,)  # the plate expanded the prior
    assert model_trace.nodes["x"]["log_prob"].shape == (5,)
    loss = pyro.infer.TraceMeanField_ELBO().differentiable_loss(model, guide, x)
    assert torch.isfinite(loss)


def test_example_command_line(example, images, capsys):
    assert example.main(["--steps", "3", "--batch-size", "8", "--elbo", "meanfield"]) == 0
    out = capsys.readouterr().out
    assert "aevb_fast  meanfield" in out
    with pytest.raises(SystemExit):
        example.main(["--steps", "0"])


@pytest.mark.parametrize("elbo", ["JitTrace_ELBO", "JitTraceMeanField_ELBO"])
def test_jit_elbos_trace_without_warnings(example, elbo):
    """Pyro's JIT ELBOs trace the model and guide: no TracerWarning from aevb_fast (comparing shapes
    while tracing converts tensors to Python booleans), and the traced loss falls."""
    import warnings

    from pyro.infer import SVI
    from pyro.optim import Adam

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = example.VAE("aevb_fast")
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), loss=getattr(pyro.infer, elbo)())
    x = torch.rand(16, 784, generator=torch.Generator().manual_seed(0)).round()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [svi.step(x) for _ in range(4)]
    ours = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if "aevb_fast" in w.filename]
    assert not ours, ours
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0]


def test_an_autoguide_refuses_a_latent_bernoulli_logits_site():
    """As for Pyro's own Bernoulli: a continuous guide must not fit values in (0, 1) to it."""
    import pyro.infer.autoguide

    def model():
        pyro.sample("c", BernoulliLogits(torch.zeros(4)))

    pyro.clear_param_store()
    with pytest.raises(Exception, match="[Dd]iscrete"):
        pyro.infer.autoguide.AutoNormal(model)()
