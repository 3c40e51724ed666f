"""The AEVB training loop: the paper's setting by default, large minibatches, one process or many,
the paper's models and data or the user's own.

``train(config, model=None, train_data=None, test_data=None)`` trains and returns the final
evaluation record; it writes into the run directory ``config.out``:

- ``metrics.jsonl``: one JSON object per evaluation: ``samples_seen``, ``train_elbo``,
  ``test_elbo`` (nats per data point), ``samples_per_s``, ``lr`` and more;
- ``checkpoint.pt`` (``checkpoint.RunDirectory``): written atomically at every evaluation, at
  the end, and when the run is interrupted (Ctrl-C, SIGTERM: ``TrainingStopped`` is raised after
  it is saved); ``resume=True`` continues from it bit for bit;
- PNG pictures at the end (``plots``).

A run diverges when its bound turns non-finite, falls catastrophically, or stays far below its
starting bound for 100 steps (``divergence.py``): ``TrainingDiverged`` is raised, and no checkpoint
is written while the bound is below the threshold, so the last good one is left as it was. A run
that ends with a test bound below the untrained model's did not learn: ``TrainingDidNotLearn``
is raised after its checkpoint and pictures are written, for inspection.
Under ``torchrun`` every rank takes a shard of every minibatch, the gradients are averaged by
one all-reduce per step, the logged bound is the global one, and only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time

import torch
from torch import nn
from tqdm import tqdm

from ..models import VAE
from . import data as datasets
from .checkpoint import RunDirectory, paper_model_spec, read_metrics
from .config import TrainConfig
from .distributed import DistributedContext
from .divergence import DivergenceGuard, TrainingDidNotLearn, TrainingDiverged, did_not_learn
from .objective import ELBOObjective, check_model, decoder_likelihood

# Steps between host synchronisations: the bound of each step stays on the device until then
# (checked for divergence, shown in the progress bar), and ranks agree on a stop request.
SYNC_EVERY = 20


class TrainingStopped(Exception):
    """Raised by train() after a SIGINT or SIGTERM, once the checkpoint is saved."""

    def __init__(self, signum: int, samples_seen: int, out: str):
        self.signum, self.samples_seen, self.out = signum, samples_seen, out
        name = signal.Signals(signum).name
        super().__init__(f"train: stopped by {name} at {samples_seen} samples; checkpoint saved in {out}")


class Trainer:
    def __init__(self, config: TrainConfig, *, model: nn.Module | None = None, data: datasets.Data | None = None,
                 resume: bool = False, overwrite: bool = False):
        """``data``: the user's data given in Python (else ``config.dataset`` names it)."""
        config.validate()
        self.config = config = config.resolved()
        self.dist = DistributedContext(config.device)
        self.device = self.dist.device
        self.run_dir = RunDirectory(config.out)
        if config.batch_size % self.dist.world:
            raise ValueError(f"train: batch_size {config.batch_size} must divide among {self.dist.world} processes")
        state = self.run_dir.load(self.device) if resume else None
        if state is not None and state["world"] != self.dist.world:
            raise ValueError(f"train: the checkpoint was written by {state['world']} processes; resume with as many")
        if state is None and self.dist.is_main:
            self.run_dir.refuse_existing(overwrite)

        self.data = (data or datasets.load(config.dataset, config.data_dir, binarize=config.binarize,
                                           seed=config.seed, test_data=config.test_data,
                                           test_fraction=config.test_fraction)).to(self.device)
        # Where eval and plot find the data again: the config names it, unless it came from Python.
        self.data_spec = {"source": "config" if data is None else "python", "name": self.data.name,
                          "event_shape": list(self.data.event_shape)}
        torch.manual_seed(config.seed)  # the same initial parameters on every rank
        self.model, self.model_spec, likelihood = self._build_model(model)
        self.data.check_range(likelihood, paper_model=self.model_spec["kind"] == "paper")
        self.objective = ELBOObjective(self.model, likelihood, config.algorithm)
        self.step_fn = torch.compile(self.objective) if config.compile else self.objective
        decay = config.weight_decay if config.weight_decay is not None else 1.0 / len(self.data.train)
        optimizer = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}[config.optimizer]
        self.optimizer = optimizer(self.model.parameters(), lr=config.learning_rate(0), weight_decay=decay)

        # Random streams: the minibatch order is shared by all ranks; the binarization and the
        # kernel noise (torch's default generator) differ per rank.
        rank = self.dist.rank
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.binarize_rng = torch.Generator(device=self.device).manual_seed(config.seed * 1009 + 1 + rank)
        torch.manual_seed(config.seed * 1009 + 2 + rank)
        self.step, self.samples_seen, self.cursor = 0, 0, 0
        self.order = torch.randperm(len(self.data.train), generator=self.shuffle)
        self.train_wall = 0.0
        self.guard = DivergenceGuard()  # its start: the untrained model's bound, at the first evaluation
        self.start_test: float | None = None  # the untrained model's test bound: did the run learn?
        self.saved_at: int | None = None  # samples_seen of the last checkpoint written
        self.stop_signal: int | None = None
        self.eval_train = self._fixed_eval_set()
        if state is not None:
            self._restore(state)
        elif self.dist.is_main:
            self.run_dir.clear()

    def _build_model(self, model: nn.Module | None) -> tuple[nn.Module, dict, str]:
        """(model, what rebuilds it, its likelihood): the paper's MLPs unless the user gave a model."""
        config = self.config
        if model is None:
            likelihood = config.likelihood or self.data.likelihood
            model = VAE.paper(self.data.dim, config.hidden, config.latent, likelihood, config.depth, config.init_std)
            return model.to(self.device), paper_model_spec(self.data.event_shape, likelihood), likelihood
        check_model(model)
        if config.algorithm != "aevb":
            raise ValueError("train: wake-sleep trains the paper's models only")
        model = model.to(self.device)
        likelihood = decoder_likelihood(model, self.data.train[:2])
        if config.likelihood not in (None, likelihood):
            raise ValueError(f"train: likelihood {config.likelihood!r} was asked for, but the model's decoder "
                             f"returns {'logits' if likelihood == 'bernoulli' else 'a (mean, logvar) pair'} "
                             f"({likelihood})")
        kind = type(model)
        return model, {"kind": "custom", "class": f"{kind.__module__}.{kind.__qualname__}"}, likelihood

    # ---- state -----------------------------------------------------------------------------

    def _rng_state(self) -> dict:
        return {"binarize": self.binarize_rng.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def save_checkpoint(self) -> None:
        per_rank = self.dist.gather(self._rng_state())
        self.saved_at = self.samples_seen
        if not self.dist.is_main:
            return
        self.run_dir.save({
            "config": dataclasses.asdict(self.config), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "step": self.step,
            "samples_seen": self.samples_seen, "cursor": self.cursor, "order": self.order,
            "shuffle": self.shuffle.get_state(), "rng": per_rank, "world": self.dist.world,
            "train_wall": self.train_wall, "start_bound": self.guard.start, "start_test_bound": self.start_test,
            "model_spec": self.model_spec, "data_spec": self.data_spec,
        })

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.samples_seen, self.cursor = state["step"], state["samples_seen"], state["cursor"]
        self.order, self.train_wall = state["order"], state["train_wall"]
        self.guard.start, self.saved_at = state.get("start_bound"), self.samples_seen
        self.start_test = state.get("start_test_bound")
        if self.start_test is None:  # a checkpoint from before it was stored: the run's first record
            first = read_metrics(self.run_dir.path)[:1]
            self.start_test = first[0]["test_elbo"] if first and first[0]["samples_seen"] == 0 else None
        self.shuffle.set_state(state["shuffle"])
        if self.dist.is_main:
            self.run_dir.drop_metrics_after(self.samples_seen)
        rng = state["rng"][self.dist.rank]
        self.binarize_rng.set_state(rng["binarize"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # ---- minibatches and evaluation -------------------------------------------------------

    def _next_indices(self) -> torch.Tensor:
        """This rank's shard of the next global minibatch (epochs of a random permutation)."""
        n, batch = len(self.order), min(self.config.batch_size, len(self.order))
        if self.cursor + batch > n:
            self.order = torch.randperm(n, generator=self.shuffle)
            self.cursor = 0
        indices = self.order[self.cursor:self.cursor + batch]
        self.cursor += batch
        return self.dist.shard(indices).to(self.device)

    def _fixed_eval_set(self) -> torch.Tensor:
        x = self.data.train[: self.config.eval_points]
        if self.data.binarize == "dynamic":  # binarized once, the same at every evaluation
            x = torch.bernoulli(x, generator=torch.Generator(device=self.device).manual_seed(12345))
        return x

    def _beta(self) -> float:
        warmup = self.config.kl_warmup
        return 1.0 if warmup <= 0 else min(1.0, self.samples_seen / warmup)

    @torch.no_grad()
    def bound(self, x: torch.Tensor) -> float:
        """The ELBO (analytic, L = 1) per data point of x, over all ranks' shards of it."""
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(777 + self.dist.rank)
        total, count = 0.0, 0
        shard = self.dist.shard(x)
        for start in range(0, len(shard), self.config.eval_batch):
            chunk = shard[start:start + self.config.eval_batch]
            total += self.objective.bound(chunk, reduction="sum", generator=generator,
                                          backend=self.config.backend, fused_head=self.config.fused_head).item()
            count += len(chunk)
        self.model.train()
        total, count = self.dist.sum([total, count])
        return total / count

    def evaluate(self, samples_per_s: float) -> dict:
        record = {
            "step": self.step, "samples_seen": self.samples_seen,
            "train_elbo": self.bound(self.eval_train), "test_elbo": self.bound(self.data.test),
            "samples_per_s": samples_per_s, "train_wall_s": self.train_wall,
            "beta": self._beta(), "lr": self.config.learning_rate(max(0, self.step - 1)),
            "world": self.dist.world,
        }
        if self.guard.start is None:
            self.guard.start, self.start_test = record["train_elbo"], record["test_elbo"]
        record["healthy"] = self._check_bound(record["train_elbo"], "of the evaluation")
        if self.dist.is_main:
            self.run_dir.append_metrics(record)
        return record

    # ---- divergence ------------------------------------------------------------------------

    def _check_bound(self, value: float, when: str) -> bool:
        """Whether the bound is healthy; stops the run, saving nothing, when it diverged (see
        divergence.py): the last good checkpoint stays as it was."""
        healthy, why = self.guard.check(value)
        if why is None:
            return healthy
        if self.saved_at is not None:
            kept = f"the last good checkpoint ({self.saved_at} samples) is {self.run_dir.checkpoint}"
        else:
            kept = "no checkpoint was written yet"
        raise TrainingDiverged(
            f"train: diverged at step {self.step} ({self.samples_seen} samples seen, lr "
            f"{self.config.learning_rate(max(0, self.step - 1)):.3g}): the bound {when} is {value:.4g}, {why}; "
            f"{kept}. Try a lower --lr.")

    def _global_bound(self, bounds: list[torch.Tensor]) -> float:
        """The median of this rank's minibatch bounds since the last call (for the progress bar:
        one wild step does not move it), after checking their mean over all ranks for divergence
        (one host sync): a spike still counts there."""
        stacked = torch.stack(bounds).float()
        local_mean, local_median = torch.stack([stacked.mean(), stacked.median()]).tolist()
        value = self.dist.sum([local_mean])[0] / self.dist.world
        self._check_bound(value, f"of the last {len(bounds)} steps")
        return local_median

    # ---- the loop --------------------------------------------------------------------------

    def _stop_requested(self) -> bool:
        """Whether any rank got SIGINT or SIGTERM; checked between steps (every step alone,
        every SYNC_EVERY steps with several ranks), so that a checkpoint taken then resumes
        exactly as if the run had not stopped."""
        flag = float(self.stop_signal is not None)
        if self.dist.world > 1:
            if self.step % SYNC_EVERY:
                return False
            flag = self.dist.sum([flag])[0]
        return flag > 0

    def _train_step(self) -> torch.Tensor:
        """One optimizer step; returns the minibatch's bound (before the step), on the device."""
        config = self.config
        x = self.data.batch(self._next_indices(), self.binarize_rng)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.bf16):
            loss, bound = self.step_fn(x, num_samples=config.num_samples, estimator=config.estimator,
                                       beta=self._beta(), free_bits=config.free_bits, backend=config.backend,
                                       fused_head=config.fused_head)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients(list(self.model.parameters()))
        if config.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_grad_norm)
        lr = config.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step += 1
        self.samples_seen += config.batch_size
        return bound.detach()

    def _request_stop(self, signum, frame) -> None:
        self.stop_signal = signum
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once

    def run(self) -> list[dict]:
        """Trains until config.samples; returns the evaluation records of this run. Raises
        TrainingStopped after saving when a signal stopped it."""
        config = self.config
        handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        records = []
        bar = tqdm(total=config.samples, initial=min(self.samples_seen, config.samples), unit="sample",
                   unit_scale=True, disable=not self.dist.is_main, desc=f"train {self.data.name}",
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)  # quiet in log files
        try:
            if self.samples_seen == 0:
                records.append(self.evaluate(0.0))
            next_eval = (self.samples_seen // config.eval_every + 1) * config.eval_every
            window_start, window_samples, pending = time.perf_counter(), 0, []
            last_test = records[-1]["test_elbo"] if records else None  # a resumed run: none yet
            while self.samples_seen < config.samples:
                if self._stop_requested():
                    self.stop_signal = self.stop_signal or signal.SIGTERM
                    break
                pending.append(self._train_step())
                window_samples += config.batch_size
                bar.update(config.batch_size)
                evaluate_now = self.samples_seen >= next_eval or self.samples_seen >= config.samples
                if self.step % SYNC_EVERY == 0 or evaluate_now:
                    batch_median = self._global_bound(pending)
                    pending = []
                    rate = window_samples / max(time.perf_counter() - window_start, 1e-9)
                    # The last evaluated test bound, and the median minibatch bound of the last
                    # SYNC_EVERY steps (a mean would show one wild step's -1e15 for the run).
                    bar.set_postfix(test=f"{last_test:.2f}" if last_test is not None else "-",
                                    minibatch_median=f"{batch_median:.2f}", samples_s=f"{rate:.0f}", refresh=False)
                if evaluate_now:
                    elapsed = time.perf_counter() - window_start
                    self.train_wall += elapsed
                    records.append(self.evaluate(window_samples / max(elapsed, 1e-9)))
                    last_test = records[-1]["test_elbo"]
                    if records[-1]["healthy"]:  # never checkpoint a model below the threshold
                        self.save_checkpoint()
                    next_eval += config.eval_every
                    window_start, window_samples = time.perf_counter(), 0
            if self.stop_signal is not None:
                if pending:
                    self._global_bound(pending)
                self.train_wall += time.perf_counter() - window_start  # the steps since the last evaluation
                if self.guard.low_checks == 0:  # never save parameters below the threshold
                    self.save_checkpoint()
        finally:
            bar.close()
            for s, handler in handlers.items():
                signal.signal(s, handler)
        if self.stop_signal is not None:
            raise TrainingStopped(self.stop_signal, self.samples_seen, str(self.run_dir.path))
        if self.dist.is_main and config.plots:
            from . import plots

            plots.plot_run(self.run_dir.path, model=self.model, data=self.data)
        self._check_learned(records)
        return records

    def _check_learned(self, records: list[dict]) -> None:
        """A finished run whose final test bound is below the untrained model's is an error, not a
        result; its checkpoint and pictures stay for inspection."""
        if not records or self.start_test is None or not did_not_learn(self.start_test, records[-1]["test_elbo"]):
            return
        final = records[-1]
        raise TrainingDidNotLearn(
            f"train: did not learn: the final test bound {final['test_elbo']:.2f} (at {final['samples_seen']} "
            f"samples) is below the untrained model's {self.start_test:.2f}; the run is kept in "
            f"{self.run_dir.path} for inspection. Try a lower --lr, or look at the learning curve "
            f"(aevb-fast plot {self.run_dir.path})")


def train(config: TrainConfig, model: nn.Module | None = None, train_data=None, test_data=None, *,
          resume: bool = False, overwrite: bool = False) -> dict:
    """Trains and returns the final evaluation record (``samples_seen``, ``train_elbo``,
    ``test_elbo``, ...); files are written by rank 0 into ``config.out``.

    ``model``: any nn.Module with ``encoder(x) -> (mu, logvar)`` and ``decoder(z) -> logits``
    (Bernoulli) or ``(mean, logvar)`` (Gaussian); the paper's MLPs when None. ``train_data``,
    ``test_data``: tensors or numpy arrays of shape ``(N, *event_shape)``, or Datasets (read once
    into memory); without ``test_data`` a random ``config.test_fraction`` of ``train_data`` is
    held out. Without ``train_data``, ``config.dataset`` names the data (built-in or a file).
    """
    data = None
    if train_data is not None:
        data = datasets.from_arrays(train_data, test_data, name="data", test_fraction=config.test_fraction,
                                    seed=config.seed)
    elif test_data is not None:
        raise ValueError("train: test_data was given without train_data")
    trainer = Trainer(config, model=model, data=data, resume=resume, overwrite=overwrite)
    records = trainer.run()
    trainer.dist.check_ranks_agree(trainer.model)
    trainer.dist.close()
    # A resumed run that was already finished evaluates nothing: its last logged record.
    return records[-1] if records else read_metrics(trainer.run_dir.path)[-1]


__all__ = ["Trainer", "TrainingDiverged", "TrainingStopped", "train"]
