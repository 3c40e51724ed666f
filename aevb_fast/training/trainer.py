"""The AEVB training loop: the paper's setting by default, large minibatches, one process or many,
the paper's models and data or the user's own.

``train(config, model=None, train_data=None, test_data=None)`` trains and returns the final
evaluation record with ``bounds_in_nats``; it writes into the run directory ``config.out``:

- ``metrics.jsonl``: one JSON object per evaluation: ``samples_seen``, ``train_elbo``,
  ``test_elbo`` (nats per data point), ``samples_per_s``, ``lr`` and more;
- ``checkpoint.pt`` (``checkpoint.RunDirectory``): written atomically at every evaluation, at
  the end, and when the run is interrupted (Ctrl-C, SIGTERM: ``TrainingStopped`` is raised after
  it is saved; a second Ctrl-C raises KeyboardInterrupt at once); ``resume=True`` continues from it
  bit for bit, with the options it ran with (``options.check_resume_options``);
- PNG pictures at the end (``plots``).

train() seeds torch's default generators for the run (its initial parameters, the kernels' noise)
and gives the caller's back as they were.

A run diverges when its bound turns non-finite or, past a fresh model's transient (its first 50
steps), falls catastrophically below its best so far or stays far below it for 5 checks
(``divergence.py``): ``TrainingDiverged`` is raised, and no checkpoint is written while the bound
is below the threshold, so the last good one is left as it was. A run that ends with a test bound
below the untrained model's did not learn: ``TrainingDidNotLearn`` is raised after its checkpoint
and pictures are written, for inspection. A run that ends within the transient is too short to
judge: it returns its result, and a ``TooShortToJudge`` warning says so.
Under ``torchrun`` every rank takes a shard of every minibatch, the gradients are averaged by
one all-reduce per step, the logged bound is the global one, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..models import VAE, BernoulliDecoder, Encoder, GaussianDecoder
from . import data as datasets
from .checkpoint import RunDirectory, config_from_state, paper_model_spec, read_metrics
from .config import TrainConfig
from .distributed import DistributedContext, process_device
from .divergence import TrainingDidNotLearn, TrainingDiverged, too_short
from .monitor import RunMonitor
from .objective import ELBOObjective, check_model, decoder_likelihood
from .options import finished_notice, resume_command, resume_options
from .state import TrainState, seed_default_generators
from .step import TrainStep
from .warn import warn_user

PAPER_DECODERS = (BernoulliDecoder, GaussianDecoder)

# Steps between host synchronisations: the bound of each step stays on the device until then
# (checked for divergence, shown in the progress bar), and ranks agree on a stop request.
SYNC_EVERY = 20


class TrainingStopped(KeyboardInterrupt):
    """Raised by train() after a SIGINT or SIGTERM, once the checkpoint is saved. A
    KeyboardInterrupt (after SIGTERM too), as an uncaught Ctrl-C is: a sweep's ``except
    Exception`` does not swallow it and go on to its next run."""

    def __init__(self, signum: int, samples_seen: int, out: str, saved_at: int | None = None):
        # saved_at: the samples of the checkpoint in `out` (None: none was written). A model below
        # the divergence line at the stop is not saved: the checkpoint is then an older one.
        self.signum, self.samples_seen, self.out, self.saved_at = signum, samples_seen, out, saved_at
        name = signal.Signals(signum).name
        if saved_at == samples_seen:
            kept = f"checkpoint saved in {out}"
        elif saved_at is not None:
            kept = (
                f"not saved (the model is below the divergence line); the last good checkpoint, at "
                f"{saved_at} samples, is in {out}"
            )
        else:
            kept = "no checkpoint was written (the model was below the divergence line)"
        super().__init__(f"train: stopped by {name} at {samples_seen} samples; {kept}")


@contextlib.contextmanager
def _first_signal_calls(handler):
    """Inside the block, the first SIGINT or SIGTERM calls ``handler(signum)`` and puts back the
    handler that was there before, so that a second one does what it did before training: Ctrl-C
    raises KeyboardInterrupt, as Python's own handler does, even while the checkpoint is written
    (it replaces the old one atomically: never half-written). The previous handlers are back after
    the block. Python lets only its main thread set handlers: elsewhere the block runs without."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(signum)
        previous[signum] = old if old is not None else signal.SIG_DFL  # None: set outside Python

    def first(signum, frame):
        signal.signal(signum, previous[signum])
        handler(signum)

    for signum in previous:
        signal.signal(signum, first)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def python_data(data, config: TrainConfig) -> datasets.Data:
    """The data given in Python: a ``data.Data``; or examples (a tensor, a numpy array or a
    Dataset, of shape ``(N, *event_shape)``), of which a random ``config.test_fraction`` is held out
    for testing; or a ``(train, test)`` pair of them."""
    if isinstance(data, datasets.Data):
        return data
    train, test = data if isinstance(data, tuple) and len(data) == 2 else (data, None)
    if not isinstance(train, (torch.Tensor, np.ndarray, torch.utils.data.Dataset)):
        raise TypeError(
            "train: data must be the training examples (a tensor, a numpy array or a Dataset), a (train, test) "
            f"pair of them, or an aevb_fast.training.data.Data; got {type(data).__name__}"
        )
    return datasets.from_arrays(train, test, name="data", test_fraction=config.test_fraction, seed=config.seed)


def paper_shape(model: nn.Module) -> dict | None:
    """``hidden``, ``latent`` and ``depth`` of a model that VAE.paper built (the library's MLPs,
    given in Python), so that the checkpoint can rebuild it; None for any other model."""
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    if type(model) is not VAE or type(encoder) is not Encoder or type(decoder) not in PAPER_DECODERS:
        return None
    linears = [layer for layer in encoder.net if isinstance(layer, nn.Linear)]
    shape = {"hidden": linears[0].out_features, "latent": encoder.latent, "depth": len(linears) - 1}
    with torch.device("meta"):  # shapes only: no memory, and no draw from the run's random streams
        paper = VAE.paper(linears[0].in_features, likelihood=decoder.likelihood, **shape)
    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    return shape if shapes == {name: tuple(value.shape) for name, value in paper.state_dict().items()} else None


def build_run_model(
    config: TrainConfig, data: datasets.Data, model: nn.Module | None, device: torch.device
) -> tuple[nn.Module, dict, str]:
    """(model, what rebuilds it, its likelihood): the paper's MLPs unless the user gave a model."""
    if model is None:
        likelihood = config.likelihood or data.likelihood
        model = VAE.paper(data.dim, config.hidden, config.latent, likelihood, config.depth, config.init_std)
        return model.to(device), paper_model_spec(data.event_shape, likelihood), likelihood
    check_model(model)
    if config.algorithm != "aevb":
        raise ValueError("train: wake-sleep trains the paper's models only")
    model = model.to(device)
    likelihood = decoder_likelihood(model, data.train[:16])
    if config.likelihood not in (None, likelihood):
        raise ValueError(
            f"train: likelihood {config.likelihood!r} was asked for, but the model's decoder "
            f"returns {'logits' if likelihood == 'bernoulli' else 'a (mean, logvar) pair'} "
            f"({likelihood})"
        )
    shape = paper_shape(model)
    if shape is not None:  # the library's MLPs, built in Python: load_checkpoint and eval rebuild them
        return model, paper_model_spec(data.event_shape, likelihood, shape), likelihood
    kind = type(model)
    return model, {"kind": "custom", "class": f"{kind.__module__}.{kind.__qualname__}"}, likelihood


class Trainer:
    """The loop: optimizer steps, evaluations, checkpoints, signals and progress
    (``self.train_step`` takes a step, ``self.monitor`` evaluates and judges, ``self.state`` is
    where the run is). Its noise comes from torch's default generators, which it seeds, as a
    loop of one's own would (``train`` gives the caller's back). ``run()`` stopped by a signal goes
    on where it stopped when called again, as the resumed checkpoint would."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: nn.Module | None = None,
        data=None,
        resume: bool = False,
        overwrite: bool = False,
        device_state: bool | None = None,
    ):
        """``data``: the user's data given in Python (else ``config.dataset`` names it): the
        training examples (a tensor, a numpy array or a Dataset; a random ``config.test_fraction``
        of them is held out for testing), a ``(train, test)`` pair of them, or a ``data.Data``.
        ``device_state``: whether each step reads its minibatch, learning rate and KL weight from
        device tensors (``step.TrainStep``; the same values as the host's); None: on CUDA, where
        it lets ``config.cuda_graph`` replay the step as one CUDA graph."""
        config.validate()
        given = config
        self.config = config = config.resolved()
        self.dist = DistributedContext(config.device)
        self.device = self.dist.device
        self.run_dir = RunDirectory(config.out)
        if config.batch_size % self.dist.world:
            raise ValueError(f"train: batch_size {config.batch_size} must divide among {self.dist.world} processes")
        saved = self.run_dir.load(self.device) if resume else None
        if saved is not None and saved["world"] != self.dist.world:
            ran = "one process" if saved["world"] == 1 else f"{saved['world']} processes (torchrun)"
            raise ValueError(
                f"train: the run in {config.out} ran as {ran} and is resumed as {self.dist.world}; resume it "
                f"with as many, as it ran (each process has its own random streams; from the command line: "
                f"{resume_command(config.out, saved['world'])})"
            )
        if saved is not None:
            # The command line's rule: a resumed run keeps its options but a few. An option is
            # given where it differs from TrainConfig's default (as a flag on the command line is
            # given where it is written): one left at its default keeps the run's value.
            defaults = dataclasses.asdict(TrainConfig())
            options = {k: v for k, v in dataclasses.asdict(given).items() if v != defaults[k] and k != "out"}
            self.config = config = resume_options(config_from_state(saved), options, cli=False)
            config.out = given.out  # where the run is now
        if saved is None and self.dist.is_main:
            self.run_dir.refuse_existing(overwrite)

        if data is None:
            self.data = datasets.load(
                config.dataset,
                config.data_dir,
                binarize=config.binarize,
                seed=config.seed,
                test_data=config.test_data,
                test_fraction=config.test_fraction,
            )
        else:
            self.data = python_data(data, config)
        self.data = self.data.to(self.device)
        # Where eval and plot find the data again: the config names it, unless it came from Python.
        self.data_spec = {
            "source": "config" if data is None else "python",
            "name": self.data.name,
            "event_shape": list(self.data.event_shape),
        }
        seed_default_generators(config.seed, self.device)  # the same initial parameters on every rank
        self.model, self.model_spec, likelihood = build_run_model(config, self.data, model, self.device)
        self.data.check_range(likelihood, paper_model=self.model_spec["kind"] == "paper", warn=self.dist.is_main)
        self.bounds_in_nats = self.data.bounds_in_nats(likelihood)
        objective = ELBOObjective(self.model, likelihood, config.algorithm)
        self.state = TrainState(config.seed, len(self.data.train), self.dist)
        self.monitor = RunMonitor(objective, config, self.state, self.dist, self.run_dir, self.data)
        self.stop_signal: int | None = None  # the signal that stopped the last run(), if one did
        self._rng_at_stop: dict | None = None  # the random streams then, for the next run()
        self._ended_by: str | None = None  # why run() cannot go on, if it cannot
        if saved is not None:
            self.model.load_state_dict(saved["model"])
            self.state.load_state_dict(saved)
            self.monitor.load_state_dict(saved)
            if self.dist.is_main:
                self.run_dir.drop_metrics_after(self.state.samples_seen)
        elif self.dist.is_main:
            self.run_dir.clear()
        self.train_step = TrainStep(
            config,
            objective,
            self.data,
            self.state,
            self.dist,
            optimizer_state=saved["optimizer"] if saved is not None else None,
            device_state=device_state,
        )
        self.optimizer = self.train_step.optimizer

    # ---- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        state = self.state.state_dict()  # every rank takes part (it gathers their random streams)
        self.monitor.saved_at = self.state.samples_seen
        optimizer = self.train_step.optimizer_state_dict()
        if self.dist.is_main:
            self.run_dir.save(
                {
                    "config": dataclasses.asdict(self.config),
                    "model": self.model.state_dict(),
                    "optimizer": optimizer,
                    **state,
                    **self.monitor.state_dict(),
                    "model_spec": self.model_spec,
                    "data_spec": self.data_spec,
                }
            )

    # ---- the loop --------------------------------------------------------------------------

    def _request_stop(self, signum: int) -> None:
        self.stop_signal = signum

    def _stop_requested(self) -> bool:
        """Whether any rank got SIGINT or SIGTERM; checked between steps (every step alone,
        every SYNC_EVERY steps with several ranks), so that a checkpoint taken then resumes
        exactly as if the run had not stopped."""
        flag = float(self.stop_signal is not None)
        if self.dist.world > 1:
            if self.state.step % SYNC_EVERY:
                return False
            flag = self.dist.sum([flag])[0]
        return flag > 0

    def run(self) -> list[dict]:
        """Trains until config.samples; returns the evaluation records of this run. Raises
        TrainingStopped after saving when a signal stopped it (between two steps: run() again goes
        on from there, bit for bit as the checkpoint would), TrainingDiverged (or
        TrainingDidNotLearn) when the run is not a result."""
        if self._ended_by is not None:
            raise RuntimeError(f"train: this Trainer cannot run again: {self._ended_by}; {self._restart_advice()}")
        if self.stop_signal is not None:
            # The random streams as they were at the stop, as the checkpoint has them, though the
            # caller may have drawn from torch's default generator since.
            self.state.set_rng_state(self._rng_at_stop)
            self.stop_signal = None
        try:
            return self._run()
        except TrainingStopped:
            self._rng_at_stop = self.state.rng_state()
            raise
        except TrainingDiverged as error:
            if not isinstance(error, TrainingDidNotLearn):  # that one ends a whole run: nothing is left to do
                self._ended_by = "its last run() diverged"
            raise
        except BaseException as error:  # a second Ctrl-C, say: it can fall between two parts of a step
            self._ended_by = f"its last run() ended with {type(error).__name__}, which can leave a step half-taken"
            raise

    def _restart_advice(self) -> str:
        if self.run_dir.holds_run():
            return f"Trainer(config, resume=True) goes on from the checkpoint in {self.run_dir.path}"
        return "no checkpoint was written: start the run again"

    def _run(self) -> list[dict]:
        config, state = self.config, self.state
        records = []
        total = -(-config.samples // config.batch_size) * config.batch_size  # whole minibatches
        bar = tqdm(
            total=total,
            initial=min(state.samples_seen, total),
            unit="sample",
            unit_scale=True,
            disable=not self.dist.is_main,
            desc=f"train {self.data.name}",
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )  # quiet in log files
        with _first_signal_calls(self._request_stop), bar:
            if state.samples_seen == 0 and self.monitor.guard.start is None:  # the untrained model, once
                records.append(self.monitor.evaluate(0.0))
            next_eval = (state.samples_seen // config.eval_every + 1) * config.eval_every
            window_start, window_samples, pending = time.perf_counter(), 0, []
            run_start, wall_before = window_start, state.wall  # wall_s: from the first step, all included
            last_test = records[-1]["test_elbo"] if records else None  # a resumed run: none yet
            while state.samples_seen < config.samples:
                if self._stop_requested():
                    self.stop_signal = self.stop_signal or signal.SIGTERM
                    break
                pending.append(self.train_step())
                window_samples += config.batch_size
                bar.update(config.batch_size)
                final = state.samples_seen >= config.samples
                evaluate_now = state.samples_seen >= next_eval or final
                # The minibatch bounds are judged in windows of SYNC_EVERY steps (the last one
                # shorter), however often the run is evaluated: the verdict must not hang on that.
                window_end = state.step % SYNC_EVERY == 0 or final
                if window_end or evaluate_now:
                    median = self.monitor.minibatch_bound(pending, judge=window_end)
                    if window_end:
                        pending = []
                    rate = window_samples / max(time.perf_counter() - window_start, 1e-9)
                    # The last evaluated test bound, and the median minibatch bound of the last
                    # SYNC_EVERY steps (a mean would show one wild step's -1e15 for the run).
                    bar.set_postfix(
                        test=f"{last_test:.2f}" if last_test is not None else "-",
                        minibatch_median=f"{median:.2f}",
                        samples_s=f"{rate:.0f}",
                        refresh=False,
                    )
                if evaluate_now:
                    elapsed = time.perf_counter() - window_start
                    state.train_wall += elapsed
                    state.wall = wall_before + time.perf_counter() - run_start
                    records.append(self.monitor.evaluate(window_samples / max(elapsed, 1e-9)))
                    last_test = records[-1]["test_elbo"]
                    bar.set_postfix(
                        test=f"{last_test:.2f}", minibatch_median=f"{median:.2f}", samples_s=f"{rate:.0f}"
                    )  # the bar ends on the final evaluation
                    # Never checkpoint a model below the threshold; but a run too short to judge
                    # that has no checkpoint yet keeps its final state (eval and --resume need one).
                    if records[-1]["healthy"] or (final and too_short(state.step) and self.monitor.saved_at is None):
                        self.save_checkpoint()
                    next_eval += config.eval_every
                    window_start, window_samples = time.perf_counter(), 0
            if self.stop_signal is not None:
                if pending:
                    self.monitor.minibatch_bound(pending)
                state.train_wall += time.perf_counter() - window_start  # the steps since the last evaluation
                state.wall = wall_before + time.perf_counter() - run_start
                if self.monitor.guard.low_checks == 0:  # never save parameters below the threshold
                    self.save_checkpoint()
        if self.stop_signal is not None:
            raise TrainingStopped(self.stop_signal, state.samples_seen, str(self.run_dir.path), self.monitor.saved_at)
        if self.dist.is_main and config.plots:
            from . import plots

            plots.plot_run(self.run_dir.path, model=self.model, data=self.data)
        if records:
            self.monitor.check_learned(records[-1])
        return records


def train(
    config: TrainConfig,
    model: nn.Module | None = None,
    train_data=None,
    test_data=None,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    """Trains and returns the final evaluation record (``samples_seen``, ``train_elbo``,
    ``test_elbo``, ...) and ``bounds_in_nats`` (False where a Bernoulli likelihood took grey
    levels: its bounds are minus cross-entropies); files are written by rank 0 into ``config.out``.

    ``model``: any nn.Module with ``encoder(x) -> (mu, logvar)`` and ``decoder(z) -> logits``
    (Bernoulli) or ``(mean, logvar)`` (Gaussian); the paper's MLPs when None. ``train_data``,
    ``test_data``: tensors or numpy arrays of shape ``(N, *event_shape)``, or Datasets (read once
    into memory); without ``test_data`` a random ``config.test_fraction`` of ``train_data`` is
    held out. Without ``train_data``, ``config.dataset`` names the data (built-in or a file).

    ``resume=True`` continues the run in ``config.out`` with the options it ran with, as the
    command line's ``--resume`` does (``options.check_resume_options``). torch's default random
    generators are left as they were: the run seeds its own from ``config.seed``.
    """
    data = None
    if train_data is not None:
        data = datasets.from_arrays(
            train_data, test_data, name="data", test_fraction=config.test_fraction, seed=config.seed
        )
    elif test_data is not None:
        raise ValueError("train: test_data was given without train_data")
    device = process_device(config.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" and torch.cuda.is_available() else []):
        return _train(Trainer(config, model=model, data=data, resume=resume, overwrite=overwrite))


def _train(trainer: Trainer) -> dict:
    """train()'s run of ``trainer`` and its summary."""
    seen, samples = trainer.state.samples_seen, trainer.config.samples
    if seen >= samples:  # a resumed run that is finished: said, as the command line says it
        if trainer.dist.is_main:
            warn_user(UserWarning("train: " + finished_notice(trainer.config.out, seen, samples, cli=False)))
        records = []
    else:
        try:
            records = trainer.run()
        except (KeyboardInterrupt, TrainingDiverged):  # TrainingStopped too
            # Every rank stops at the same step (the stop request and the bounds are agreed on),
            # so the group can close: left open, gloo's threads abort a rank at exit under
            # torchrun. The verdict is what the user needs; a failure to close must not replace it.
            with contextlib.suppress(Exception):
                trainer.dist.close()
            raise
    trainer.dist.check_ranks_agree(trainer.model)
    trainer.dist.close()
    # A resumed run that was already finished evaluates nothing: its last logged record.
    summary = records[-1] if records else read_metrics(trainer.run_dir.path)[-1]
    return {**summary, "bounds_in_nats": trainer.bounds_in_nats}


__all__ = ["Trainer", "TrainingDiverged", "TrainingStopped", "train"]
