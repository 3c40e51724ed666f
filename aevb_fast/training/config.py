"""What a training run is: ``TrainConfig``, and the two optimisation recipes it resolves to.

Options left at ``None`` are filled by ``TrainConfig.resolved()`` from the batch size:

- M <= ``LARGE_BATCH`` (256): the paper's recipe, Adagrad at lr 0.02, constant, no clipping;
- M > ``LARGE_BATCH``: the large-batch recipe (found by measurement on MNIST, see the README):
  Adam at a peak lr of ``LARGE_BATCH_LR * min(1, sqrt(M / LARGE_BATCH_LR_AT))`` (1e-2 from
  M = 4096 on, 5e-3 at M = 1024), a linear warm-up over the first ``LARGE_BATCH_WARMUP`` steps,
  the peak held until the last ``WSD_DECAY_FRACTION`` of the steps, a linear decay over those to
  ``LARGE_BATCH_FINAL_LR`` of the peak at ``samples`` (warmup-stable-decay: the result at any
  budget is as good as a longer run's at the same point, where a cosine over the whole budget
  spends a short run at low rates), and the gradient norm clipped at ``LARGE_BATCH_CLIP``. The clipping is what lets Adam run at 1e-2 from the first
  steps: the gradient norm of the untrained model spikes into the thousands.

The resolved config is what a checkpoint stores, so a resumed run keeps its recipe.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..elbo import BACKENDS, ESTIMATORS, LIKELIHOODS

OPTIMIZERS = ("adagrad", "adam")
ALGORITHMS = ("aevb", "wake-sleep")
LR_SCALINGS = ("none", "linear", "sqrt")
LR_DECAYS = ("none", "cosine", "wsd")
BINARIZATIONS = ("dynamic", "threshold")

LARGE_BATCH = 256  # batch sizes above this train with the large-batch recipe
PAPER_LR = 0.02  # Adagrad
LARGE_BATCH_LR = 1e-2  # Adam's peak from M = LARGE_BATCH_LR_AT on
LARGE_BATCH_LR_AT = 4096  # below it the peak scales by sqrt(M / 4096)
LARGE_BATCH_WARMUP = 20  # steps
LARGE_BATCH_FINAL_LR = 0.02  # fraction of the peak reached at the end of the decay
EVAL_EVERY = 100_000  # samples between evaluations of a run of 10^6 samples or more
WSD_DECAY_FRACTION = 0.2  # wsd: the last fifth of the steps decays the rate linearly
LARGE_BATCH_CLIP = 100.0  # gradient norm (of the mean negative ELBO per data point)


def large_batch_lr(batch_size: int) -> float:
    """Adam's peak learning rate in the large-batch recipe."""
    return LARGE_BATCH_LR * min(1.0, math.sqrt(batch_size / LARGE_BATCH_LR_AT))


@dataclass
class TrainConfig:
    # What to train on: a built-in dataset (mnist, binarized_mnist, frey, synthetic) or the path
    # of a .npy/.npz/.pt file; for a model and data given to train() in Python, a label only.
    dataset: str = "mnist"
    test_data: str | None = None  # a file of test points (else the dataset's, or a held-out split)
    test_fraction: float = 0.1  # the held-out split of a data file without test points
    data_dir: str | None = None
    binarize: str = "dynamic"  # MNIST: "dynamic" (a Bernoulli draw per minibatch) or "threshold"
    likelihood: str | None = None  # None: the dataset's or the decoder's
    latent: int = 20
    hidden: int = 500
    depth: int = 1
    init_std: float = 0.01
    batch_size: int = 100  # the global minibatch M
    samples: int = 1_000_000  # training examples to process in all (the paper's x-axis)
    algorithm: str = "aevb"  # or "wake-sleep" (the paper's baseline)
    num_samples: int = 1  # L: draws of z per data point
    estimator: str = "analytic"
    optimizer: str | None = None  # None: adagrad for M <= LARGE_BATCH, adam above
    lr: float | None = None  # None: the recipe's peak learning rate (0.02, or large_batch_lr(M))
    lr_scaling: str | None = None  # "none", "linear" or "sqrt": lr * (M / 100) or its square root
    warmup: int | None = None  # steps of linear learning-rate warm-up
    lr_decay: str | None = None  # "none", "cosine" or "wsd" (to final_lr x the peak at `samples`)
    final_lr: float | None = None
    decay_fraction: float = WSD_DECAY_FRACTION  # wsd: the share of the steps, at the end, that decays
    clip_grad_norm: float | None = None  # 0: no clipping
    weight_decay: float | None = None  # None: 1 / N_train, the prior N(0, I) on the parameters
    kl_warmup: int = 0  # samples over which beta rises linearly from 0 to 1
    free_bits: float = 0.0
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/default"
    eval_every: int | None = None  # samples between evaluations (and checkpoints): EVAL_EVERY, or
    # samples / 10 for shorter runs, so that every learning curve has at least 10 points
    eval_points: int = 10_000  # training points in the train bound
    eval_batch: int = 2000
    backend: str = "fused"  # or "reference": the same loop in plain PyTorch
    fused_head: bool = True  # the decoder's output layer inside the likelihood op (fused backend)
    compile: bool = False
    cuda_graph: bool = True  # CUDA: the step captured once as a CUDA graph and replayed
    bf16: bool = False  # autocast to bfloat16 (GPU only)
    plots: bool = True

    def resolved(self) -> "TrainConfig":
        """A copy with every recipe option that is None filled in (see the module's docstring)."""
        large = self.batch_size > LARGE_BATCH
        optimizer = self.optimizer or ("adam" if large else "adagrad")
        paper = not large and optimizer == "adagrad"
        recipe = dict(
            optimizer=optimizer,
            lr=PAPER_LR if optimizer == "adagrad" else large_batch_lr(self.batch_size),
            lr_scaling="none",
            warmup=0 if paper else LARGE_BATCH_WARMUP,
            lr_decay="none" if paper else "wsd",
            final_lr=1.0 if paper else LARGE_BATCH_FINAL_LR,
            clip_grad_norm=0.0 if paper else LARGE_BATCH_CLIP,
        )
        recipe["eval_every"] = min(EVAL_EVERY, max(self.batch_size, self.samples // 10))
        given = {k: getattr(self, k) for k in recipe if getattr(self, k) is not None}
        return dataclasses.replace(self, **{**recipe, **given})

    def validate(self) -> None:
        checks = [
            (self.optimizer in (None, *OPTIMIZERS), f"optimizer must be one of {OPTIMIZERS}"),
            (self.algorithm in ALGORITHMS, f"algorithm must be one of {ALGORITHMS}"),
            (
                self.algorithm == "aevb"
                or (
                    self.estimator == "analytic"
                    and self.num_samples == 1
                    and self.kl_warmup == 0
                    and self.free_bits == 0
                ),
                "wake-sleep takes no estimator, L, KL warm-up or free-bits options",
            ),
            (self.estimator in ESTIMATORS, f"estimator must be one of {ESTIMATORS}"),
            (self.likelihood in (None, *LIKELIHOODS), f"likelihood must be one of {LIKELIHOODS}"),
            (self.backend in BACKENDS, f"backend must be one of {tuple(BACKENDS)}"),
            (self.binarize in BINARIZATIONS, f"binarize must be one of {BINARIZATIONS}"),
            (self.lr_scaling in (None, *LR_SCALINGS), f"lr_scaling must be one of {LR_SCALINGS}"),
            (self.lr_decay in (None, *LR_DECAYS), f"lr_decay must be one of {LR_DECAYS}"),
            (
                self.lr is None or (math.isfinite(self.lr) and self.lr > 0),
                f"--lr must be a finite number > 0, got {self.lr}",
            ),
            (self.warmup is None or self.warmup >= 0, "warmup must be >= 0"),
            (self.final_lr is None or 0 <= self.final_lr <= 1, "final_lr must be in [0, 1]"),
            (0 < self.decay_fraction <= 1, "decay_fraction must be in (0, 1]"),
            (self.clip_grad_norm is None or self.clip_grad_norm >= 0, "clip_grad_norm must be >= 0"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.samples >= 1, f"--samples (training examples to process) must be >= 1, got {self.samples}"),
            (
                not self.device.startswith("cuda") or torch.cuda.is_available(),
                f"--device {self.device}, but torch {torch.__version__} sees no CUDA device; use --device cpu",
            ),
            (self.num_samples >= 1, "num_samples (L) must be >= 1"),
            (self.latent >= 1 and self.hidden >= 1 and self.depth >= 1, "latent, hidden and depth must be >= 1"),
            (0 < self.test_fraction < 1, "test_fraction must be between 0 and 1"),
            (
                (self.eval_every is None or self.eval_every >= 1) and self.eval_points >= 1 and self.eval_batch >= 1,
                "eval_every, eval_points and eval_batch must be >= 1",
            ),
            (not self.bf16 or self.device.startswith("cuda"), "bf16 autocast is for CUDA devices"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"train: {message}")

    def kl_weight(self, samples_seen: int) -> float:
        """beta: rises linearly from 0 to 1 over the first kl_warmup samples."""
        return 1.0 if self.kl_warmup <= 0 else min(1.0, samples_seen / self.kl_warmup)

    def peak_learning_rate(self) -> float:
        """The (resolved) learning rate after warm-up, scaled for the batch size by lr_scaling."""
        scale = self.batch_size / 100
        return self.lr * {"none": 1.0, "linear": scale, "sqrt": math.sqrt(scale)}[self.lr_scaling]

    def learning_rate(self, step: int) -> float:
        """The rate of optimizer step ``step`` (0-based) of a resolved config."""
        peak = self.peak_learning_rate()
        if step < self.warmup:
            return peak * (step + 1) / self.warmup
        if self.lr_decay == "none":
            return peak
        total = max(1, math.ceil(self.samples / self.batch_size) - self.warmup)
        if self.lr_decay == "wsd":  # warm-up, stable at the peak, a linear decay over the last steps
            decay = max(1, round(self.decay_fraction * total))
            progress = min(1.0, max(0, step - self.warmup - (total - decay) + 1) / decay)
            return peak * (1 - (1 - self.final_lr) * progress)
        progress = min(1.0, (step - self.warmup) / total)
        return peak * (self.final_lr + (1 - self.final_lr) * 0.5 * (1 + math.cos(math.pi * progress)))
