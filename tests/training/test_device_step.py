"""The training step with its inputs on the device (issue 31): the minibatches, learning rates and
KL weights it reads from device tensors are the host's, so a run goes on bit for bit whichever
drove it, resumed or not; on a GPU, the step replayed as one CUDA graph equals the eager step."""

import signal

import pytest
import torch

from aevb_fast import cli
from aevb_fast.training import TrainConfig, Trainer, TrainingStopped
from aevb_fast.training.device_step import DeviceStepInputs
from aevb_fast.training.distributed import DistributedContext
from aevb_fast.training.state import TrainState
from testing import require_device, signal_during_step, small_train_config


def small(tmp_path, name, **overrides) -> TrainConfig:
    options = dict(samples=3000, eval_every=1000, eval_points=500, kl_warmup=2000, out=str(tmp_path / name))
    options.update(overrides)
    return small_train_config(**options)


def assert_same_parameters(a: Trainer, b: Trainer) -> None:
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p.cpu(), q.cpu())


@pytest.mark.parametrize("batch", [3, 7])
def test_device_inputs_are_the_hosts_over_epochs(batch):
    """Indices over several epochs of 7 points (reshuffles included), and the schedule's values."""
    config = TrainConfig(batch_size=batch, samples=40, kl_warmup=20, lr_decay="cosine", warmup=2).resolved()
    dist = DistributedContext("cpu")
    host, device = TrainState(0, 7, dist), TrainState(0, 7, dist)
    inputs = DeviceStepInputs(config, device, torch.device("cpu"))
    for step in range(-(-config.samples // batch)):
        expected = host.next_indices(batch)
        inputs.before_step()
        assert torch.equal(inputs.indices(), expected), step
        assert inputs.kl_weight().item() == pytest.approx(config.kl_weight(host.samples_seen), rel=1e-7)
        inputs.set_learning_rate()
        assert inputs.lr.item() == config.learning_rate(host.step)
        inputs.after_step()
        host.advance(batch), device.advance(batch)
    assert inputs.step.item() == host.step and host.cursor == device.cursor


@pytest.mark.parametrize("overrides", [{}, {"batch_size": 300, "samples": 12000}], ids=["adagrad", "adam-wsd-clip"])
def test_a_device_driven_run_is_the_host_driven_run(tmp_path, overrides):
    """The whole run, resumed half way under the device state (and past an epoch's end for Adam)."""
    host = Trainer(small(tmp_path, "host", **overrides), device_state=False)
    host.run()
    half = dict(overrides, samples=overrides.get("samples", 3000) // 2)
    Trainer(small(tmp_path, "device", **half), device_state=True).run()
    resumed = Trainer(small(tmp_path, "device", **overrides), resume=True, device_state=True)
    resumed.run()
    assert resumed.optimizer.__class__.__name__ == ("Adam" if overrides else "Adagrad")
    assert_same_parameters(host, resumed)


def test_no_cuda_graph_option():
    parser = cli.build_parser()
    assert parser.parse_args(["train", "--no-cuda-graph"]).cuda_graph is False
    assert parser.parse_args(["train"]).cuda_graph is None  # not given: the config's default, True
    assert TrainConfig().cuda_graph is True


# ---- on a GPU (run by benchmarks/gpu_check.sh) ---------------------------------------------------


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
def test_cuda_graph_step_equals_the_eager_step(tmp_path, bf16, monkeypatch):
    """A few hundred steps replayed as one captured graph give the eager run's parameters bit for
    bit (under bfloat16 autocast too), and a run stopped by a signal under capture resumes exactly."""
    require_device("cuda")
    common = dict(device="cuda", samples=15000, eval_every=5000, bf16=bf16)
    eager = Trainer(small(tmp_path, "eager", cuda_graph=False, **common))
    eager.run()
    captured = Trainer(small(tmp_path, "captured", **common))
    captured.run()
    graph = captured.train_step.captured
    assert graph is not None and graph.graph is not None and not graph.eager
    assert_same_parameters(eager, captured)
    if bf16:
        return

    stopped = Trainer(small(tmp_path, "stopped", **common))
    signal_during_step(monkeypatch, 137, signal.SIGINT)
    with pytest.raises(TrainingStopped):
        stopped.run()
    monkeypatch.undo()
    resumed = Trainer(small(tmp_path, "stopped", **common), resume=True)
    resumed.run()
    assert_same_parameters(eager, resumed)


class SyncingVAE(torch.nn.Module):
    """A user's model whose encoder reads a value on the host (as a logging line might): its step
    cannot be captured."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def encoder(self, x):
        mu, logvar = self.inner.encoder(x)
        if mu.abs().max().item() > 1e9:  # a host synchronisation
            raise RuntimeError("unreachable")
        return mu, logvar

    def decoder(self, z):
        return self.inner.decoder(z)


def test_a_cuda_step_that_cannot_be_captured_runs_eagerly_with_a_notice(tmp_path, capfd):
    require_device("cuda")
    from aevb_fast.models import VAE

    torch.manual_seed(0)
    model = SyncingVAE(VAE.paper(64, 32, 4))
    trainer = Trainer(small(tmp_path, "syncing", device="cuda", kl_warmup=0), model=model)
    trainer.run()
    assert trainer.train_step.captured.eager and trainer.train_step.captured.graph is None
    notice = [line for line in capfd.readouterr().err.splitlines() if "could not be captured" in line]
    assert len(notice) == 1 and "--no-cuda-graph" in notice[0]
