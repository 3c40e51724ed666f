"""The AEVB trainer: the paper's setting by default, large minibatches, one process or many.

``train(TrainConfig(...))`` (or ``aevb-fast train ...``) trains a ``models.VAE`` on a dataset of
``aevb_fast.data`` with the fused ELBO, and writes into the run directory ``config.out``:

- ``metrics.jsonl``: one JSON object per evaluation: ``samples_seen``, ``train_elbo``,
  ``test_elbo`` (nats per data point), ``samples_per_s`` and more;
- ``checkpoint.pt``: written atomically (a temporary file, then a rename) at every evaluation,
  at the end, and when the run is interrupted (Ctrl-C, SIGTERM); ``resume=True`` continues from
  it bit for bit;
- PNG pictures at the end (see ``aevb_fast.plots``).

A NaN or infinite loss stops the run with ``TrainingDiverged`` and leaves the last good
checkpoint as it was. Started by ``torchrun``, every rank takes a shard of every minibatch
(gloo on CPU, NCCL on GPU), the gradients are averaged by one all-reduce per step, the logged
bound is the global one, and only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from . import data as datasets
from .elbo import BACKENDS, ESTIMATORS
from .models import VAE
from .wake_sleep import WakeSleep

OPTIMIZERS = ("adagrad", "adam")
ALGORITHMS = ("aevb", "wake-sleep")
# Steps between host synchronisations: the bound of each step stays on the device until then
# (checked for NaN, shown in the progress bar), and ranks agree on a stop request.
SYNC_EVERY = 20
DEFAULT_LR = {"adagrad": 0.02, "adam": 1e-3}


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    data_dir: str | None = None
    binarize: str = "dynamic"  # MNIST: "dynamic" (a Bernoulli draw per minibatch) or "threshold"
    likelihood: str | None = None  # None: the dataset's ("bernoulli" or "gaussian")
    latent: int = 20
    hidden: int = 500
    depth: int = 1
    init_std: float = 0.01
    batch_size: int = 100  # the global minibatch M
    samples: int = 1_000_000  # training samples to process (the paper's x-axis)
    algorithm: str = "aevb"  # or "wake-sleep" (the paper's baseline, aevb_fast.wake_sleep)
    num_samples: int = 1  # L
    estimator: str = "analytic"
    optimizer: str = "adagrad"
    lr: float | None = None  # None: 0.02 for Adagrad, 1e-3 for Adam
    lr_scaling: str = "none"  # "linear" or "sqrt": lr * (batch_size / 100) or its square root
    weight_decay: float | None = None  # None: 1 / N_train, the prior N(0, I) on the parameters
    kl_warmup: int = 0  # samples over which beta rises linearly from 0 to 1
    free_bits: float = 0.0
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/default"
    eval_every: int = 100_000  # samples between evaluations (and checkpoints)
    eval_points: int = 10_000  # training points in the train bound
    eval_batch: int = 2000
    backend: str = "fused"  # or "reference": the same loop in plain PyTorch
    compile: bool = False
    bf16: bool = False  # autocast to bfloat16 (GPU only)
    plots: bool = True

    def validate(self) -> None:
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.algorithm in ALGORITHMS, f"algorithm must be one of {ALGORITHMS}"),
            (self.algorithm == "aevb" or (self.estimator == "analytic" and self.num_samples == 1
                                          and self.kl_warmup == 0 and self.free_bits == 0),
             "wake-sleep takes no estimator, L, KL warm-up or free-bits options"),
            (self.estimator in ESTIMATORS, f"estimator must be one of {ESTIMATORS}"),
            (self.backend in BACKENDS, f"backend must be one of {tuple(BACKENDS)}"),
            (self.lr_scaling in ("none", "linear", "sqrt"), "lr_scaling must be none, linear or sqrt"),
            (self.batch_size >= 1 and self.samples >= 0, "batch_size must be >= 1 and samples >= 0"),
            (self.latent >= 1 and self.hidden >= 1, "latent and hidden must be >= 1"),
            (not self.bf16 or self.device.startswith("cuda"), "bf16 autocast is for CUDA devices"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"train: {message}")

    def learning_rate(self) -> float:
        lr = self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]
        scale = self.batch_size / 100
        return lr * {"none": 1.0, "linear": scale, "sqrt": math.sqrt(scale)}[self.lr_scaling]


def _distributed() -> tuple[int, int]:
    """(rank, world size), starting the process group when torchrun launched us."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # Imported first on purpose: importing torch._dynamo (torch.optim does) after the group
        # exists keeps the group alive past destroy_process_group (torch 2.13), and a gloo group
        # alive at interpreter shutdown aborts the process now and then.
        import torch._dynamo  # noqa: F401

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Data parallelism: every rank's gradients replaced by their mean, in one all-reduce.

    Not DistributedDataParallel: in this trainer (torch 2.13) it keeps the process group alive
    after destroy_process_group, and a gloo group still alive when the interpreter shuts down
    aborts the process now and then (its worker thread frees Python-owned tensors without the
    GIL). DDP would overlap the all-reduce with backward; for these small models it is one short
    message per step.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()


def _check_ranks_agree(model: torch.nn.Module) -> None:
    """Raises unless every rank ends with the same parameters (a sum of all of them, compared)."""
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    low, high = total.clone(), total.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise RuntimeError(f"train: the ranks' parameters differ after training (sums {low.item()} "
                           f"to {high.item()})")


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False):
        config.validate()
        self.config = config
        self.rank, self.world = _distributed()
        if config.batch_size % self.world:
            raise ValueError(f"train: batch_size {config.batch_size} must divide among {self.world} processes")
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        self.out = Path(config.out)
        self.checkpoint_path = self.out / "checkpoint.pt"

        self.data = datasets.load(config.dataset, config.data_dir, binarize=config.binarize,
                                  seed=config.seed).to(self.device)
        likelihood = config.likelihood or self.data.likelihood
        torch.manual_seed(config.seed)  # the same initial parameters on every rank
        self.model = VAE.paper(self.data.dim, config.hidden, config.latent, likelihood,
                               config.depth, config.init_std).to(self.device)
        # What a step calls: the VAE (returns the ELBO) or the wake-sleep objective (returns the
        # surrogate loss and the ELBO).
        self.step_model = WakeSleep(self.model) if config.algorithm == "wake-sleep" else self.model
        if config.compile:
            self.step_model = torch.compile(self.step_model)
        decay = config.weight_decay if config.weight_decay is not None else 1.0 / len(self.data.train)
        optimizer = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}[config.optimizer]
        self.optimizer = optimizer(self.model.parameters(), lr=config.learning_rate(), weight_decay=decay)

        # Random streams: the minibatch order is shared by all ranks; the binarization and the
        # kernel noise (torch's default generator) differ per rank.
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.binarize_rng = torch.Generator(device=self.device).manual_seed(config.seed * 1009 + 1 + self.rank)
        torch.manual_seed(config.seed * 1009 + 2 + self.rank)
        self.step, self.samples_seen, self.cursor = 0, 0, 0
        self.order = torch.randperm(len(self.data.train), generator=self.shuffle)
        self.train_wall = 0.0
        self.stop_signal: int | None = None
        self.eval_train = self._fixed_eval_set()
        if resume:
            self._load_checkpoint()

    # ---- state -----------------------------------------------------------------------------

    def _rng_state(self) -> dict:
        return {"binarize": self.binarize_rng.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def _save_checkpoint(self) -> None:
        per_rank = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(per_rank, self._rng_state())
        else:
            per_rank = [self._rng_state()]
        if self.rank != 0:
            return
        state = {
            "config": dataclasses.asdict(self.config), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "step": self.step,
            "samples_seen": self.samples_seen, "cursor": self.cursor, "order": self.order,
            "shuffle": self.shuffle.get_state(), "rng": per_rank, "world": self.world,
            "train_wall": self.train_wall,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)  # atomic: the old checkpoint stays until this

    def _load_checkpoint(self) -> None:
        if not self.checkpoint_path.is_file():
            raise FileNotFoundError(f"train: --resume but {self.checkpoint_path} does not exist")
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        if state["world"] != self.world:
            raise ValueError(f"train: the checkpoint was written by {state['world']} processes; resume with as many")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.samples_seen, self.cursor = state["step"], state["samples_seen"], state["cursor"]
        self.order, self.train_wall = state["order"], state["train_wall"]
        self.shuffle.set_state(state["shuffle"])
        if self.rank == 0:
            self._drop_metrics_after(self.samples_seen)
        rng = state["rng"][self.rank]
        self.binarize_rng.set_state(rng["binarize"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def _drop_metrics_after(self, samples_seen: int) -> None:
        """A run killed between an evaluation's log line and its checkpoint logged a point that
        the resumed run will log again: drop log lines past the checkpoint."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["samples_seen"] <= samples_seen]
        if len(kept) < len(lines):
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)

    # ---- minibatches and evaluation -------------------------------------------------------

    def _next_indices(self) -> torch.Tensor:
        """This rank's shard of the next global minibatch (epochs of a random permutation)."""
        n, batch = len(self.order), self.config.batch_size
        if self.cursor + batch > n:
            self.order = torch.randperm(n, generator=self.shuffle)
            self.cursor = 0
        indices = self.order[self.cursor:self.cursor + batch]
        self.cursor += batch
        return indices[self.rank::self.world].to(self.device)

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
        generator = torch.Generator(device=self.device).manual_seed(777 + self.rank)
        total, count = 0.0, 0
        shard = x[self.rank::self.world]
        for start in range(0, len(shard), self.config.eval_batch):
            chunk = shard[start:start + self.config.eval_batch]
            total += self.model(chunk, reduction="sum", generator=generator,
                                backend=self.config.backend).item()
            count += len(chunk)
        self.model.train()
        total, count = _all_reduce_sum([total, count], self.device)
        return total / count

    def evaluate(self, samples_per_s: float) -> dict:
        record = {
            "step": self.step, "samples_seen": self.samples_seen,
            "train_elbo": self.bound(self.eval_train), "test_elbo": self.bound(self.data.test),
            "samples_per_s": samples_per_s, "train_wall_s": self.train_wall,
            "beta": self._beta(), "lr": self.config.learning_rate(), "world": self.world,
        }
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            with (self.out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    # ---- the loop --------------------------------------------------------------------------

    def _stop_requested(self) -> bool:
        """Whether any rank got SIGINT or SIGTERM; checked between steps (every step alone,
        every SYNC_EVERY steps with several ranks), so that a checkpoint taken then resumes
        exactly as if the run had not stopped."""
        flag = float(self.stop_signal is not None)
        if self.world > 1:
            if self.step % SYNC_EVERY:
                return False
            flag = _all_reduce_sum([flag], self.device)[0]
        return flag > 0

    def _global_bound(self, bounds: list[torch.Tensor]) -> float:
        """The mean bound of the steps since the last call, over all ranks: one host sync. A NaN
        stops the run before anything is saved, so the last good checkpoint stays."""
        local = torch.stack(bounds).float().mean().item()
        value = _all_reduce_sum([local], self.device)[0] / self.world
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"train: the bound became {value} within the {len(bounds)} steps before step "
                f"{self.step} ({self.samples_seen} samples seen); stopped without saving, the last "
                f"good checkpoint is {self.checkpoint_path}. Try a lower --lr."
            )
        return value

    def _train_step(self) -> torch.Tensor:
        """One optimizer step; returns the minibatch's bound (before the step), on the device."""
        x = self.data.batch(self._next_indices(), self.binarize_rng)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.config.bf16)
        with autocast:
            if self.config.algorithm == "wake-sleep":
                loss, bound = self.step_model(x, backend=self.config.backend)
            else:
                bound = self.step_model(x, num_samples=self.config.num_samples,
                                        estimator=self.config.estimator, beta=self._beta(),
                                        free_bits=self.config.free_bits, backend=self.config.backend)
                loss = -bound
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.world > 1:
            _average_gradients(list(self.model.parameters()), self.world)
        self.optimizer.step()
        self.step += 1
        self.samples_seen += self.config.batch_size
        return bound.detach()

    def _request_stop(self, signum, frame) -> None:
        self.stop_signal = signum
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once

    def run(self) -> list[dict]:
        """Trains until config.samples; returns the evaluation records of this run."""
        config = self.config
        handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        records = []
        bar = tqdm(total=config.samples, initial=min(self.samples_seen, config.samples), unit="sample",
                   unit_scale=True, disable=self.rank != 0, desc=f"train {config.dataset}",
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)  # quiet in log files
        try:
            if self.samples_seen == 0:
                records.append(self.evaluate(0.0))
            next_eval = (self.samples_seen // config.eval_every + 1) * config.eval_every
            window_start, window_samples, running, pending = time.perf_counter(), 0, None, []
            while self.samples_seen < config.samples:
                if self._stop_requested():
                    self.stop_signal = self.stop_signal or signal.SIGTERM
                    break
                pending.append(self._train_step())
                window_samples += config.batch_size
                bar.update(config.batch_size)
                evaluate_now = self.samples_seen >= next_eval or self.samples_seen >= config.samples
                if self.step % SYNC_EVERY == 0 or evaluate_now:
                    recent = self._global_bound(pending)
                    pending = []
                    running = recent if running is None else 0.7 * running + 0.3 * recent
                    rate = window_samples / max(time.perf_counter() - window_start, 1e-9)
                    bar.set_postfix(bound=f"{running:.2f}", samples_s=f"{rate:.0f}", refresh=False)
                if evaluate_now:
                    elapsed = time.perf_counter() - window_start
                    self.train_wall += elapsed
                    records.append(self.evaluate(window_samples / max(elapsed, 1e-9)))
                    self._save_checkpoint()
                    next_eval += config.eval_every
                    window_start, window_samples = time.perf_counter(), 0
            if self.stop_signal is not None:
                if pending:
                    self._global_bound(pending)  # never save parameters that went NaN
                self._save_checkpoint()
                if self.rank == 0:
                    name = signal.Signals(self.stop_signal).name
                    tqdm.write(f"train: stopped by {name} at {self.samples_seen} samples; "
                               f"checkpoint saved to {self.checkpoint_path}")
        finally:
            bar.close()
            for s, handler in handlers.items():
                signal.signal(s, handler)
        if self.rank == 0 and config.plots and self.stop_signal is None:
            from . import plots

            plots.plot_run(self.out, model=self.model, data=self.data)
        return records


def train(config: TrainConfig, resume: bool = False) -> list[dict]:
    """Trains (see Trainer); the evaluation records on every rank, files written by rank 0."""
    # No teardown when a rank raises: the others may wait in a collective that never completes,
    # and the launcher ends them anyway.
    trainer = Trainer(config, resume=resume)
    records = trainer.run()
    if dist.is_initialized():
        _check_ranks_agree(trainer.model)
        dist.barrier()
        # Explicitly, while the interpreter is alive: a gloo process group left to interpreter
        # shutdown now and then aborts both ranks ("terminate called without an active exception").
        # This frees it only because nothing else holds it (see _distributed, _average_gradients).
        dist.destroy_process_group()
    return records


def load_checkpoint_config(path: str | os.PathLike) -> TrainConfig:
    if not Path(path).is_file():
        raise FileNotFoundError(f"train: --resume but {path} does not exist")
    return TrainConfig(**torch.load(path, map_location="cpu", weights_only=False)["config"])


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[TrainConfig, VAE]:
    """The config and model of a checkpoint written by the trainer."""
    state = torch.load(path, map_location=device, weights_only=False)
    config = TrainConfig(**state["config"])
    shapes = {k: v.shape for k, v in state["model"].items()}
    data_dim = shapes["encoder.net.0.weight"][1]
    likelihood = config.likelihood or ("gaussian" if config.dataset == "frey" else "bernoulli")
    model = VAE.paper(data_dim, config.hidden, config.latent, likelihood, config.depth, config.init_std)
    model.load_state_dict(state["model"])
    return config, model.to(device)
