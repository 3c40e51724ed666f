"""The training-step benchmark: its step is the trainer's, its check catches a wrong step, and
its profiler shares add up."""

import pytest
import torch

from aevb_fast.bench import train_step as bench_train
from aevb_fast.models import VAE


def _model():
    torch.manual_seed(0)
    return VAE.paper(bench_train.DATA, 32, 4)


def test_step_loss_is_the_trainers_negative_elbo():
    model = _model()
    x = torch.rand(16, bench_train.DATA).bernoulli()
    eps = torch.randn(16, 4)
    for provider, backend in (("fused", "fused"), ("fused-head", "fused"), ("reference", "reference")):
        step = bench_train.Step(provider, model)
        expected = -step.model(x, eps=eps.unsqueeze(0), backend=backend)
        torch.testing.assert_close(step.loss(x, eps), expected)


def test_a_wrong_step_gets_no_time():
    model = _model()
    steps = {name: bench_train.Step(name, model) for name in ("fused", "reference")}
    x = torch.rand(8, bench_train.DATA).bernoulli()
    bench_train.check(steps, x, 4)  # agree
    right = steps["fused"].loss
    steps["fused"].loss = lambda x, eps=None: 1.01 * right(x, eps)
    with pytest.raises(RuntimeError, match="fused step disagrees"):
        bench_train.check(steps, x, 4)


def test_profile_shares_cover_the_step():
    step = bench_train.Step("fused", _model())
    x = torch.rand(64, bench_train.DATA).bernoulli()
    step(x)
    shares = bench_train.profile_shares(step, x, iterations=2)
    assert set(shares) == {*bench_train.REGIONS, "other"}
    assert all(v >= 0 for v in shares.values())
    assert 0.97 < sum(shares.values()) < 1.3  # regions can overlap the profiler's own overhead a little
    assert shares["elbo"] > 0 and shares["encoder"] > 0 and shares["decoder"] > 0


@pytest.mark.slow
def test_peak_memory_of_a_step_and_the_largest_batch_that_fits():
    # The fused step at M = 8192 holds the decoder's logits and their gradient (2 x 25.7 MB, about
    # 2.17 x 25.7 MB measured); the fused head holds two chunks of them (2 x 4.2 MB) instead. The
    # CPU figure is sampled and can miss part of the gradient, hence 1.5 and not 2.
    logits = 8192 * bench_train.DATA * 4
    fused = bench_train.peak_bytes("fused", 8192, 64, 4, "cpu")
    head = bench_train.peak_bytes("fused-head", 8192, 64, 4, "cpu")
    assert fused > 1.5 * logits and fused - head > logits, (fused, head)
    rows = [{"batch": m, "hidden": 64, "latent": 4, "peak_bytes": {"a": p - bench_train.resident_before_step(m, 64, 4)}}
            for m, p in ((1000, 3e9), (2000, 5e9))]
    assert bench_train.largest_batch(rows, "a", 11e9) == 5000
