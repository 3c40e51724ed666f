"""How a training run is watched: the bound on fixed training points and on the test set at every
evaluation, the minibatch bounds in between, and the verdicts that stop a run instead of
reporting it (divergence.py): diverged (not finite, catastrophic, or, past a fresh model's
transient, far below its best so far for too long) and did not learn (a final test bound below
the untrained model's); a run that ends within the transient is too short to judge (a notice)."""

from __future__ import annotations

import torch

from .checkpoint import RunDirectory, read_metrics
from .config import TrainConfig
from .data import Data
from .distributed import DistributedContext
from .divergence import (
    DivergenceGuard,
    TooShortToJudge,
    TrainingDidNotLearn,
    TrainingDiverged,
    collapsed_test_bound,
    did_not_learn,
    too_short,
    too_short_notice,
)
from .objective import ELBOObjective
from .state import TrainState
from .warn import warn_user


class RunMonitor:
    """Evaluates a run and judges it. ``start`` and ``start_test`` are the untrained model's train
    and test bounds (set at the first evaluation, or restored from the checkpoint); ``saved_at``
    is the samples_seen of the last checkpoint written, named when the run diverges."""

    def __init__(
        self,
        objective: ELBOObjective,
        config: TrainConfig,
        state: TrainState,
        dist: DistributedContext,
        run_dir: RunDirectory,
        data: Data,
    ):
        self.objective, self.config, self.state, self.dist, self.run_dir = objective, config, state, dist, run_dir
        self.test = data.test
        self.eval_train = data.train[: config.eval_points]  # the train bound's points, fixed for the run
        if data.binarize == "dynamic":  # binarized once, the same at every evaluation
            generator = torch.Generator(device=dist.device).manual_seed(12345)
            self.eval_train = torch.bernoulli(self.eval_train, generator=generator)
        self.guard = DivergenceGuard()
        self.start_test: float | None = None
        self.best_test: float | None = None
        self.saved_at: int | None = None

    def state_dict(self) -> dict:
        return {
            "start_bound": self.guard.start,
            "best_bound": self.guard.best,
            "start_test_bound": self.start_test,
            "best_test_bound": self.best_test,
        }

    def load_state_dict(self, state: dict) -> None:
        self.guard.start, self.start_test = state.get("start_bound"), state.get("start_test_bound")
        self.guard.best = state.get("best_bound")  # None in older checkpoints: the start is the reference
        self.saved_at = state["samples_seen"]
        if self.start_test is None:  # a checkpoint from before it was stored: the run's first record
            first = read_metrics(self.run_dir.path)[:1]
            self.start_test = first[0]["test_elbo"] if first and first[0]["samples_seen"] == 0 else None
        self.best_test = state.get("best_test_bound", self.start_test)  # older checkpoints: the start

    @torch.no_grad()
    def bound(self, x: torch.Tensor) -> float:
        """The ELBO (analytic, L = 1) per data point of x, over all ranks' shards of it."""
        model = self.objective.model
        model.eval()
        generator = torch.Generator(device=self.dist.device).manual_seed(777 + self.dist.rank)
        total, count = 0.0, 0
        shard = self.dist.shard(x)
        for start in range(0, len(shard), self.config.eval_batch):
            chunk = shard[start : start + self.config.eval_batch]
            total += self.objective.bound(
                chunk,
                reduction="sum",
                generator=generator,
                backend=self.config.backend,
                fused_head=self.config.fused_head,
            ).item()
            count += len(chunk)
        model.train()
        total, count = self.dist.sum([total, count])
        return total / count

    def evaluate(self, samples_per_s: float) -> dict:
        """One evaluation record, written to metrics.jsonl (rank 0), its train bound checked."""
        state = self.state
        record = {
            "step": state.step,
            "samples_seen": state.samples_seen,
            "train_elbo": self.bound(self.eval_train),
            "test_elbo": self.bound(self.test),
            "samples_per_s": samples_per_s,
            "train_wall_s": state.train_wall,
            "wall_s": state.wall,
            "beta": self.config.kl_weight(state.samples_seen),
            "lr": self.config.learning_rate(max(0, state.step - 1)),
            "world": self.dist.world,
        }
        if self.guard.start is None:
            self.guard.start, self.start_test = record["train_elbo"], record["test_elbo"]
        record["healthy"] = self.check_bound(record["train_elbo"], "of the evaluation")
        self.check_test_bound(record["test_elbo"], record["train_elbo"])
        if self.dist.is_main:
            self.run_dir.append_metrics(record)
        return record

    def check_bound(self, value: float, when: str, sets_best: bool = True) -> bool:
        """Whether the bound is healthy; raises TrainingDiverged, saving nothing, when the run
        diverged (see divergence.py): the last good checkpoint stays as it was."""
        healthy, why = self.guard.check(value, self.state.step, sets_best)
        if why is None:
            return healthy
        state = self.state
        raise TrainingDiverged(
            f"train: diverged at step {state.step} ({state.samples_seen} samples seen, lr "
            f"{self.config.learning_rate(max(0, state.step - 1)):.3g}): the bound {when} is {value:.4g}, {why}; "
            f"{self._kept()}. Try a lower --lr."
        )

    def check_test_bound(self, value: float, train_bound: float) -> None:
        """Raises TrainingDiverged, saving nothing, when the test bound collapsed (divergence.py:
        collapsed_test_bound) though the training bound may be healthy; else records its best."""
        why = collapsed_test_bound(value, self.best_test, self.state.step)
        if why is None:
            self.best_test = value if self.best_test is None else max(self.best_test, value)
            return
        advice = "Try a lower --lr"
        if self.objective.likelihood == "gaussian":
            advice = (
                "A Gaussian whose variance is learned can shrink it around values that the training data "
                "repeats (the 0s of grey-level images), so that new points become ever less likely: binarize "
                "the data for a Bernoulli likelihood, or add uniform noise below one grey level to the pixels"
            )
        state = self.state
        raise TrainingDiverged(
            f"train: the test bound collapsed at step {state.step} ({state.samples_seen} samples seen): it is "
            f"{value:.4g}, {why}, while the training bound is {train_bound:.4g}; {self._kept()}. {advice}."
        )

    def _kept(self) -> str:
        if self.saved_at is not None:
            return f"the last good checkpoint ({self.saved_at} samples) is {self.run_dir.checkpoint}"
        return "no checkpoint was written yet"

    def minibatch_bound(self, bounds: list[torch.Tensor], judge: bool = True) -> float:
        """The median of this rank's minibatch bounds (for the progress bar: one wild step does not
        move it); with ``judge``, after checking their mean over all ranks for divergence (one host
        sync): a spike still counts there. The trainer judges fixed windows of SYNC_EVERY steps, so
        that the verdict does not depend on how often the run is evaluated."""
        stacked = torch.stack(bounds).float()
        if not judge:
            return stacked.median().item()
        local_mean, local_median = torch.stack([stacked.mean(), stacked.median()]).tolist()
        value = self.dist.sum([local_mean])[0] / self.dist.world
        self.check_bound(value, f"of the last {len(bounds)} steps", sets_best=False)
        return local_median

    def check_learned(self, final: dict) -> None:
        """A finished run whose final test bound is below the untrained model's is an error, not a
        result; its checkpoint and pictures stay for inspection. A run that ended within the
        transient is judged neither way: a TooShortToJudge warning says so (rank 0)."""
        if too_short(self.state.step):
            if self.dist.is_main:
                warn_user(
                    TooShortToJudge(
                        "train: " + too_short_notice(self.state.samples_seen, self.state.step, self.config.batch_size)
                    )
                )
            return
        if self.start_test is None or not did_not_learn(self.start_test, final["test_elbo"]):
            return
        raise TrainingDidNotLearn(
            f"train: did not learn: the final test bound {final['test_elbo']:.2f} (at {final['samples_seen']} "
            f"samples) is below the untrained model's {self.start_test:.2f}; the run is kept in "
            f"{self.run_dir.path} for inspection. Try a lower --lr, or look at the learning curve "
            f"(aevb-fast plot {self.run_dir.path})"
        )
