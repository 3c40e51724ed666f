"""The trainer as a Python user drives it (a script, a notebook, a thread): resuming a run by the
command line's rules, a second Ctrl-C, run() again after a stop, data given as tensors, loading a
checkpoint, a verdict that does not hang on the evaluation cadence, warnings that name the user's
line, the global random state, and tab completion."""

import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import aevb_fast.training
from aevb_fast.models import VAE
from aevb_fast.training import (
    GreyLevelsUnderBernoulli,
    RunError,
    TooShortToJudge,
    Trainer,
    TrainingStopped,
    load_checkpoint,
    read_metrics,
    train,
)
from aevb_fast.training.monitor import RunMonitor
from aevb_fast.training.step import TrainStep
from testing import signal_during_step, small_train_config

TESTS = Path(__file__).resolve().parents[1]


def small(tmp_path, name="run", **overrides):
    options = dict(samples=6000, eval_every=2000, eval_points=1000, out=str(tmp_path / name))
    options.update(overrides)
    return small_train_config(**options)


def quiet_train(*args, **kwargs) -> dict:
    """train() with its too-short notice silenced (these runs are short on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TooShortToJudge)
        return train(*args, **kwargs)


def same_parameters(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_python_resume_keeps_the_options_of_the_run(tmp_path):
    # As --resume does: lr, batch_size, seed, dataset, optimizer and latent are refused with the
    # option, the run's value and the given one (not trained on, nor written into the checkpoint).
    quiet_train(small(tmp_path, samples=100, eval_every=100))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    before = checkpoint.read_bytes()
    for change, said in [
        (dict(lr=0.5), "lr=0.5 .the run has 0.02."),
        (dict(batch_size=25), "batch_size=25 .the run has 50."),
        (dict(seed=3), "seed=3 .the run has 0."),
        (dict(dataset="frey"), "dataset='frey' .the run has 'synthetic'."),
        (dict(optimizer="adam"), "optimizer='adam' .the run has 'adagrad'.: "),  # not lr and the rest it implies
        (dict(latent=5), "latent=5 .the run has 4."),
    ]:
        with pytest.raises(
            ValueError, match=f"^train: resume=True: {said}.*a resumed run keeps its options; only samples"
        ):
            train(small(tmp_path, samples=200, eval_every=100, **change), resume=True)
        assert checkpoint.read_bytes() == before, change
    # Fewer samples than the run has seen: the last record, and a warning that says so.
    with pytest.warns(UserWarning, match=r"is finished \(100 samples seen, 50 asked for\); nothing to do"):
        summary = train(small(tmp_path, samples=50, eval_every=100), resume=True)
    assert summary["samples_seen"] == 100 and checkpoint.read_bytes() == before
    # What may change does.
    summary = quiet_train(small(tmp_path, samples=200, eval_every=100, data_dir=str(tmp_path)), resume=True)
    assert summary["samples_seen"] == 200
    # A field left at TrainConfig's default is not given: it keeps the run's value, whether the run
    # may change it (plots, samples) or not (batch_size, latent, dataset), as a flag not written.
    from aevb_fast.training import TrainConfig

    summary = quiet_train(TrainConfig(out=str(tmp_path / "run"), samples=300), resume=True)
    saved = torch.load(checkpoint, weights_only=False)["config"]
    assert summary["samples_seen"] == 300 and saved["plots"] is False
    assert (saved["batch_size"], saved["latent"], saved["dataset"]) == (50, 4, "synthetic")
    assert not list((tmp_path / "run").glob("*.png"))


def test_a_second_ctrl_c_raises_keyboard_interrupt_and_leaves_the_checkpoint_whole(tmp_path):
    # In a subprocess: before the fix, the second Ctrl-C killed the interpreter (SIG_DFL).
    script = f"""
import os, signal, torch
from aevb_fast.training import Trainer, TrainingStopped
from aevb_fast.training.checkpoint import RunDirectory
from aevb_fast.training.step import TrainStep
from testing import small_train_config

config = small_train_config(samples=6000, eval_every=2000, eval_points=1000, out={str(tmp_path / "run")!r})
trainer = Trainer(config)
take_step, save = TrainStep.__call__, RunDirectory.save

def step_then_ctrl_c(self):
    if self.state.step == 45:  # after the checkpoint of step 40
        os.kill(os.getpid(), signal.SIGINT)
    return take_step(self)

def save_then_ctrl_c(self, state):  # the stop's checkpoint: Ctrl-C again, half-way through writing it
    if state["step"] == 46:
        self.checkpoint.with_suffix(".pt.tmp").write_bytes(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGINT)
    save(self, state)

TrainStep.__call__, RunDirectory.save = step_then_ctrl_c, save_then_ctrl_c
try:
    trainer.run()
except TrainingStopped:
    print("TrainingStopped")
except KeyboardInterrupt:
    print("KeyboardInterrupt")
print("handler back:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
print("checkpoint of step", torch.load(trainer.run_dir.checkpoint, weights_only=False)["step"])
try:
    trainer.run()
except RuntimeError as error:
    print(error)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[:3] == ["KeyboardInterrupt", "handler back: True", "checkpoint of step 40"], done.stdout
    assert lines[3].startswith("train: this Trainer cannot run again: its last run() ended with KeyboardInterrupt")
    assert f"Trainer(config, resume=True) goes on from the checkpoint in {tmp_path / 'run'}" in lines[3]


def test_run_again_after_a_signal_goes_on_bit_for_bit(tmp_path, monkeypatch):
    # As a PyTorch user expects of a loop they stopped: run() again continues it, as a resume from
    # the checkpoint would, though the caller drew from torch's generator in between.
    trainer = Trainer(small(tmp_path, "stopped"))
    signal_during_step(monkeypatch, 37, signal.SIGINT)
    with pytest.raises(TrainingStopped):
        trainer.run()
    monkeypatch.undo()
    torch.randn(1000)
    try:
        trainer.run()
    except TrainingStopped:  # a KeyboardInterrupt: uncaught, pytest would take it for the user's
        pytest.fail("run() again stopped at once, training nothing")
    straight = Trainer(small(tmp_path, "straight"))
    straight.run()
    assert trainer.state.samples_seen == 6000 and same_parameters(trainer.model, straight.model)
    assert [r["samples_seen"] for r in read_metrics(tmp_path / "stopped")] == [0, 2000, 4000, 6000]


def test_train_runs_outside_the_main_thread(tmp_path):
    # Python sets signal handlers in its main thread only: elsewhere the run goes without them.
    outcome = {}

    def work():
        try:
            outcome["summary"] = quiet_train(small(tmp_path, samples=100, eval_every=100))
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"]["samples_seen"] == 100
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_trainer_takes_a_tensor_or_a_train_test_pair(tmp_path):
    x = torch.rand(300, 16, generator=torch.Generator().manual_seed(0)).round()
    held_out = Trainer(small(tmp_path, "tensor"), data=x)
    assert (len(held_out.data.train), len(held_out.data.test)) == (270, 30)  # test_fraction 0.1
    pair = Trainer(small(tmp_path, "pair"), data=(x[:200], x[200:]))
    assert (len(pair.data.train), len(pair.data.test)) == (200, 100)
    with pytest.raises(TypeError, match=r"^train: data must be the training examples .* got list$"):
        Trainer(small(tmp_path, "list"), data=[[0.0, 1.0]] * 10)


class Halves(nn.Module):
    def forward(self, h):
        return h.chunk(2, dim=-1)


class OwnVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 6), Halves())
        self.decoder = nn.Linear(3, 16)


def test_load_checkpoint_of_a_model_given_in_python(tmp_path):
    x = torch.rand(200, 16, generator=torch.Generator().manual_seed(0)).round()
    # The library's own MLPs, built by VAE.paper: rebuilt from the checkpoint.
    paper = VAE.paper(16, 24, 3)
    quiet_train(small(tmp_path, "paper", samples=100, eval_every=100), model=paper, train_data=x)
    config, loaded = load_checkpoint(tmp_path / "paper")
    assert type(loaded) is VAE and same_parameters(loaded, paper)
    # A model of one's own: the error says to pass one like it, which is then loaded.
    own = OwnVAE()
    quiet_train(small(tmp_path, "own", samples=100, eval_every=100), model=own, train_data=x)
    with pytest.raises(RunError, match=r"model of your own \(test_python_api.OwnVAE\).*load_checkpoint\(path, model="):
        load_checkpoint(tmp_path / "own")
    config, loaded = load_checkpoint(tmp_path / "own", model=OwnVAE())
    assert same_parameters(loaded, own)


def test_the_divergence_verdict_does_not_hang_on_the_evaluation_cadence(tmp_path, monkeypatch):
    # A fresh model's dip at step 5 (evaluated: catastrophic) and one wild minibatch at step 70
    # (alone: catastrophic; in its window of 20 steps: one low check). Evaluated at every step or
    # at the default cadence, the same steps make the same verdict: none.
    bound, take_step = RunMonitor.bound, TrainStep.__call__

    def dipping_bound(self, x):
        return -1e6 if self.state.step == 5 else bound(self, x)

    def wild_minibatch(self):
        value = take_step(self)
        return torch.full_like(value, -1e6 if self.state.step == 5 else -1e5) if self.state.step in (5, 70) else value

    monkeypatch.setattr(RunMonitor, "bound", dipping_bound)
    monkeypatch.setattr(TrainStep, "__call__", wild_minibatch)
    every_step = Trainer(small(tmp_path, "every", eval_every=50))
    every_step.run()
    default = Trainer(small(tmp_path, "default", eval_every=None))
    default.run()
    assert every_step.state.step == default.state.step == 120
    assert same_parameters(every_step.model, default.model)


def test_warnings_name_the_callers_line(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(small(tmp_path, samples=100, eval_every=100), train_data=torch.rand(200, 16))  # grey levels
    ours = [w for w in caught if issubclass(w.category, (GreyLevelsUnderBernoulli, TooShortToJudge))]
    assert {w.category for w in ours} == {GreyLevelsUnderBernoulli, TooShortToJudge}
    assert all(w.filename == __file__ for w in ours), [(w.filename, w.lineno) for w in ours]


def test_train_leaves_the_global_random_state_as_it_was(tmp_path):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = quiet_train(small(tmp_path, samples=100, eval_every=100))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)  # the run is its seed's, whatever the caller's state
    again = quiet_train(small(tmp_path, samples=100, eval_every=100), overwrite=True)
    timings = ("samples_per_s", "train_wall_s", "wall_s")
    assert {k: v for k, v in first.items() if k not in timings} == {k: v for k, v in again.items() if k not in timings}


def test_tab_completion_offers_the_public_names():
    assert set(aevb_fast.training.__all__) <= set(dir(aevb_fast.training))
    assert "train" in dir(aevb_fast.training) and "TrainConfig" in dir(aevb_fast.training)
