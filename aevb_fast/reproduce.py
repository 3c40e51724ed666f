"""Reproduction of Kingma & Welling (2013), Figures 2 and 3 (``aevb-fast reproduce ...``).

- ``figure2``: for each latent size, an AEVB run and a wake-sleep run of the paper's model
  (MNIST: 500 hidden units; Frey Face: 200), minibatch 100, Adagrad, the bound on train and test
  sets logged against training samples seen. One run directory per (algorithm, J) under
  ``<root>/figure2-<dataset>/``; a finished run is not run again, an interrupted one resumes.
- ``figure3``: J = 3, 100 hidden units, MNIST: the importance-sampled log p(x) of the first 1000
  training and test points at log-spaced points of training, AEVB against wake-sleep; and, at
  the end, the estimate against K to show that K is large enough. (The paper used an HMC-based
  estimator and also ran MCEM, which is not implemented here.)
- ``report``: ``docs/reproduction.md`` with the plots and the paper's values beside ours.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import torch

# Figures made with matplotlib's object API, never pyplot: in a notebook, pyplot's backend
# (and so plt.show) stays the user's.
from matplotlib.figure import Figure

from .training.checkpoint import RunDirectory, config_from_state, load_checkpoint, read_metrics

ALGORITHMS = ("aevb", "wake-sleep")
HIDDEN = {"mnist": 500, "frey": 200}
LATENTS = {"mnist": (3, 5, 10, 20, 200), "frey": (2, 5, 10, 20)}
# The defaults of `aevb-fast reproduce` (which passes only what the user gave): the paper's 10^7
# training samples per run, the committed runs (their logs, not their checkpoints) and the report.
SAMPLES = 10_000_000
RUNS = Path("docs/reproduction/runs")
REPORT = Path("docs/reproduction.md")
NOTES = Path("docs/reproduction_notes.md")

# Read off Figure 2 of arXiv:1312.6114 (approximate: +-0.5 nat for MNIST, +-10 for Frey Face).
PAPER_FIGURE2 = {
    "mnist": {
        "aevb_test_1e7": {3: -138.0, 5: -124.1, 10: -108.5, 20: -104.7, 200: -103.9},
        "aevb_train_end": {3: -127.9, 5: -114.8, 10: -99.1, 20: -97.1, 200: -97.6},
        "aevb_test_end": {3: -133.5, 5: -118.7, 10: -103.4, 20: -99.4, 200: -99.5},
        "wake-sleep_test_end": {3: -137.4, 5: -120.6, 10: -106.4, 20: -104.1, 200: -103.6},
        "end_samples": 2.5e8,
    },
    "frey": {
        "aevb_test_1e7": {2: 823, 5: 1044, 10: 1171, 20: 1200},
        "aevb_train_end": {2: 934, 5: 1232, 10: 1458, 20: 1487},
        "aevb_test_end": {2: 872, 5: 1108, 10: 1310, 20: 1314},
        "wake-sleep_test_end": {2: 569, 5: 569, 10: 569, 20: 569},
        "end_samples": 1e8,
    },
}
# Figure 3 (J = 3, 100 hidden, 50000 training points, ~6.7e7 samples; HMC estimator).
PAPER_FIGURE3 = {"aevb": (-131.0, -138.0), "wake-sleep": (-136.9, -141.0)}


def run_dir(root: Path, dataset: str, algorithm: str, latent: int) -> Path:
    return Path(root) / f"figure2-{dataset}" / f"{algorithm}-j{latent}"


def _train_to(out: Path, samples: int, **config_fields) -> None:
    """Trains the run in `out` up to `samples`: from scratch, or resumed from its checkpoint;
    nothing when it is already there."""
    from .training import TrainConfig, train

    records = read_metrics(out)
    if records and records[-1]["samples_seen"] >= samples:
        return
    checkpoint = out / "checkpoint.pt"
    if records and not checkpoint.is_file():
        raise FileNotFoundError(
            f"reproduce: {out} has a log up to {records[-1]['samples_seen']} samples but no checkpoint to "
            f"continue from (checkpoints are not committed); delete {out} to run it again from the start"
        )
    if checkpoint.is_file():
        config = config_from_state(RunDirectory(out).load())
        config.out, config.samples = str(out), samples  # where the run is now (the root may have moved)
        train(config, resume=True)
    else:
        train(TrainConfig(out=str(out), samples=samples, plots=False, **config_fields))


def figure2(
    dataset: str,
    latents: list[int],
    samples: int = SAMPLES,
    root: Path = RUNS,
    *,
    algorithms=ALGORITHMS,
    batch_size: int = 100,
    device: str = "cpu",
    lr: float | None = None,
    eval_every: int | None = None,
    data_dir: str | None = None,
) -> Path:
    """Trains the grid (each run resumable) and plots it; returns the PNG's path."""
    for latent in latents:
        for algorithm in algorithms:
            out = run_dir(root, dataset, algorithm, latent)
            print(f"reproduce figure2: {dataset} J={latent} {algorithm} -> {out}", flush=True)
            _train_to(
                out,
                samples,
                dataset=dataset,
                latent=latent,
                hidden=HIDDEN[dataset],
                algorithm=algorithm,
                batch_size=batch_size,
                device=device,
                lr=lr,
                data_dir=data_dir,
                eval_every=eval_every or max(batch_size, samples // 50),
            )
    return plot_figure2(dataset, latents, root)


def plot_figure2(dataset: str, latents: list[int], root: Path) -> Path:
    """The paper's panels: one per latent size, AEVB and wake-sleep, train and test bounds
    against samples seen (log x), the paper's read-off values as markers."""
    paper = PAPER_FIGURE2[dataset]
    fig = Figure(figsize=(3.3 * len(latents), 3.4))
    axes = fig.subplots(1, len(latents), squeeze=False)
    for ax, latent in zip(axes[0], latents):
        reached = 0
        for algorithm, color in zip(ALGORITHMS, ("C0", "C3")):
            records = [r for r in read_metrics(run_dir(root, dataset, algorithm, latent)) if r["samples_seen"] > 0]
            if not records:
                continue
            x = [r["samples_seen"] for r in records]
            reached = max(reached, x[-1])
            label = "AEVB" if algorithm == "aevb" else "wake-sleep"
            ax.plot(x, [r["train_elbo"] for r in records], "-", color=color, label=f"{label} train")
            ax.plot(x, [r["test_elbo"] for r in records], "--", color=color, label=f"{label} test")
        ax.plot([1e7], [paper["aevb_test_1e7"][latent]], "kx", label="paper AEVB test, 1e7")
        end = paper["end_samples"]
        ax.plot([end], [paper["aevb_test_end"][latent]], "k+", label=f"paper AEVB test, {end:.1e}")
        ax.plot([end], [paper["wake-sleep_test_end"][latent]], "r+", label="paper wake-sleep test, end")
        ax.set_xscale("log")
        ax.set_xlim(1e5, end * 1.5)
        ax.set_title(
            f"{dataset}, J = {latent}" + (f"\n(ours stop at {reached:.2g} samples)" if reached else ""), fontsize=9
        )
        ax.set_xlabel("training samples evaluated")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("lower bound (nats per data point)")
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    out = Path(root) / f"figure2-{dataset}.png"
    fig.savefig(out, dpi=100)
    return out


# ---- Figure 3 ------------------------------------------------------------------------------


def figure3(
    samples: int = SAMPLES,
    root: Path = RUNS,
    *,
    importance_samples: int = 1000,
    points: int = 1000,
    device: str = "cpu",
    data_dir: str | None = None,
    batch_size: int = 100,
    settle_ks: tuple[int, ...] = (1, 10, 100, 1000, 5000),
) -> Path:
    """Trains J = 3 AEVB and wake-sleep models in stages up to `samples` and estimates log p(x)
    of the first `points` training and test points after each stage (resumable)."""
    from .training import data as datasets
    from .training.evaluate import log_marginal_likelihood

    # The evaluation points, loaded and binarized once.
    mnist = datasets.load("mnist", data_dir)
    points_by_split = {
        "train": _fixed_binary(mnist.train[:points]).to(device),
        "test": _fixed_binary(mnist.test[:points]).to(device),
    }
    stages = sorted({min(samples, int(10**e)) for e in _log_steps(1e5, samples)})
    for algorithm in ALGORITHMS:
        out = Path(root) / "figure3-mnist" / algorithm
        estimates_path = out / "marginal_likelihood.jsonl"
        done = {r["stage"] for r in _read_jsonl(estimates_path)}
        for stage in stages:
            if stage in done:
                continue
            print(f"reproduce figure3: {algorithm} to {stage} samples", flush=True)
            _train_to(
                out,
                stage,
                dataset="mnist",
                latent=3,
                hidden=100,
                algorithm=algorithm,
                device=device,
                data_dir=data_dir,
                batch_size=batch_size,
                eval_every=max(batch_size, samples // 50),
            )
            _, model = load_checkpoint(out / "checkpoint.pt", device)
            generator = torch.Generator(device=device).manual_seed(4321)
            row = {
                "stage": stage,
                "samples_seen": read_metrics(out)[-1]["samples_seen"],
                "importance_samples": importance_samples,
            }
            for split, x in points_by_split.items():
                row[f"{split}_log_px"] = (
                    log_marginal_likelihood(model, x, importance_samples, generator=generator).mean().item()
                )
            _append_jsonl(estimates_path, row)
        _settle_check(out, points_by_split["test"], device, settle_ks)
    return plot_figure3(root)


def _log_steps(start: float, stop: float, per_decade: int = 2) -> list[float]:
    lo, hi = math.log10(start), math.log10(stop)
    n = max(1, round((hi - lo) * per_decade))
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def _fixed_binary(x: torch.Tensor) -> torch.Tensor:
    """The evaluation points, binarized once with a fixed seed (the trainer binarizes dynamically)."""
    return torch.bernoulli(x, generator=torch.Generator(device=x.device).manual_seed(12345))


def _settle_check(out: Path, x: torch.Tensor, device: str, ks: tuple[int, ...]) -> None:
    """log p(x) of the final model against K: the estimate must have settled at the K used."""
    from .training.evaluate import log_marginal_likelihood

    path = out / "settle.json"
    last = read_metrics(out)[-1]["samples_seen"]
    if path.is_file() and json.loads(path.read_text())["samples_seen"] == last:
        return
    _, model = load_checkpoint(out / "checkpoint.pt", device)
    estimates = {}
    for k in ks:
        generator = torch.Generator(device=device).manual_seed(99)
        estimates[str(k)] = log_marginal_likelihood(model, x, k, generator=generator).mean().item()
    path.write_text(json.dumps({"samples_seen": last, "test_log_px_by_K": estimates}, indent=1))


def plot_figure3(root: Path) -> Path:
    fig = Figure(figsize=(9, 3.6))
    left, right = fig.subplots(1, 2)
    for algorithm, color in zip(ALGORITHMS, ("C0", "C3")):
        out = Path(root) / "figure3-mnist" / algorithm
        rows = _read_jsonl(out / "marginal_likelihood.jsonl")
        label = "AEVB" if algorithm == "aevb" else "wake-sleep"
        if rows:
            x = [r["samples_seen"] for r in rows]
            left.plot(x, [r["train_log_px"] for r in rows], "-o", color=color, ms=3, label=f"{label} train")
            left.plot(x, [r["test_log_px"] for r in rows], "--s", color=color, ms=3, label=f"{label} test")
        train_end, test_end = PAPER_FIGURE3[algorithm]
        left.plot([6.7e7] * 2, [train_end, test_end], "+", color=color, ms=10, label=f"paper {label} (HMC)")
        settle = out / "settle.json"
        if settle.is_file():
            by_k = json.loads(settle.read_text())["test_log_px_by_K"]
            right.plot([int(k) for k in by_k], list(by_k.values()), "-o", color=color, label=label)
    left.set(
        xscale="log",
        xlabel="training samples evaluated",
        ylabel="log p(x), importance sampled",
        title="MNIST, J = 3, 1000 points",
    )
    left.grid(alpha=0.3)
    left.legend(fontsize=6)
    right.set(
        xscale="log",
        xlabel="importance samples K",
        ylabel="test log p(x) estimate",
        title="the estimate settles as K grows (final models)",
    )
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    out = Path(root) / "figure3-mnist.png"
    fig.savefig(out, dpi=100)
    return out


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _append_jsonl(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


# ---- the report ------------------------------------------------------------------------------


def _final(root: Path, dataset: str, algorithm: str, latent: int) -> dict | None:
    records = read_metrics(run_dir(root, dataset, algorithm, latent))
    return records[-1] if records and records[-1]["samples_seen"] > 0 else None


def _at(root: Path, dataset: str, algorithm: str, latent: int, samples: float) -> float | None:
    """The test bound at the first evaluation at or after `samples`."""
    for r in read_metrics(run_dir(root, dataset, algorithm, latent)):
        if r["samples_seen"] >= samples:
            return r["test_elbo"]
    return None


def _samples(record: dict | None) -> str:
    return "-" if record is None else f"{record['samples_seen']:.2g}"


def _fmt(value) -> str:
    return "" if value is None else f"{value:.1f}"


COMMANDS = """```
aevb-fast reproduce figure2 --dataset mnist --latents 3,5,10,20,200 --samples 1e7
aevb-fast reproduce figure2 --dataset frey  --latents 2,5,10,20 --samples 1e7
aevb-fast reproduce figure3 --samples 1e7
aevb-fast reproduce report
```"""


def report(root: Path = RUNS, out: Path = REPORT, notes: Path | None = NOTES) -> Path:
    """docs/reproduction.md from whatever runs exist under root (plots copied beside it), then
    the hand-written discussion in `notes` (docs/reproduction_notes.md) if it exists."""
    import shutil

    figure2_latents = {
        dataset: [j for j in LATENTS[dataset] if any(_final(root, dataset, a, j) for a in ALGORITHMS)]
        for dataset in ("mnist", "frey")
    }
    if not any(figure2_latents.values()) and not (root / "figure3-mnist").is_dir():
        # A mistyped --root must not replace a report with an empty one.
        raise FileNotFoundError(
            f"no runs under {root} (--root); run aevb-fast reproduce figure2 or figure3 first, {out} is left as it was"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Reproducing Kingma & Welling (2013), Figures 2 and 3",
        "",
        "Written by `aevb-fast reproduce report` from the runs under "
        f"`{root}`; every number below is read from those runs' `metrics.jsonl`.",
        "",
        f"Hardware: {_cpu_name()}, {torch.get_num_threads()} threads (CPU only), torch {torch.__version__}.",
        "",
        "The commands (each resumable: a finished run is not run again):",
        "",
        COMMANDS,
        "",
        "Setting: the paper's models and optimizer (one hidden layer of tanh units, N(0, 0.01^2) "
        "initialisation, Adagrad with step size 0.02, weight decay 1/N as the N(0, I) prior on the "
        "parameters, minibatch 100, L = 1); MNIST binarized dynamically (a fresh Bernoulli draw of "
        "every minibatch), the bounds on 10000 training points and the 10000 test points binarized "
        "once. Wake-sleep uses the same networks and optimizer (aevb_fast/training/wake_sleep.py).",
        "",
    ]
    for dataset in ("mnist", "frey"):
        latents = figure2_latents[dataset]
        if not latents:
            continue
        png = plot_figure2(dataset, latents, root)
        shutil.copy(png, out.parent / png.name)
        paper = PAPER_FIGURE2[dataset]
        lines += [
            f"## Figure 2, {dataset}",
            "",
            f"![{dataset}]({png.name})",
            "",
            "Paper values are read off the paper's plot (about +-0.5 nat for MNIST, +-10 for Frey Face).",
            "",
            "| J | AEVB test at 1e7 (ours / paper) | samples: AEVB / WS | AEVB train | AEVB test "
            "| wake-sleep train | wake-sleep test | paper at end: AEVB train / test, wake-sleep test "
            "| wall time (AEVB + WS) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for j in latents:
            a, w = _final(root, dataset, "aevb", j), _final(root, dataset, "wake-sleep", j)
            wall = sum(r["train_wall_s"] for r in (a, w) if r) / 60
            lines.append(
                f"| {j} | {_fmt(_at(root, dataset, 'aevb', j, 1e7))} / {paper['aevb_test_1e7'][j]} "
                f"| {_samples(a)} / {_samples(w)} "
                f"| {_fmt(a and a['train_elbo'])} | {_fmt(a and a['test_elbo'])} "
                f"| {_fmt(w and w['train_elbo'])} | {_fmt(w and w['test_elbo'])} "
                f"| {paper['aevb_train_end'][j]} / {paper['aevb_test_end'][j]}, {paper['wake-sleep_test_end'][j]} "
                f"| {wall:.0f} min |"
            )
        lines.append("")
    if (root / "figure3-mnist").is_dir():
        png = plot_figure3(root)
        shutil.copy(png, out.parent / png.name)
        lines += [
            "## Figure 3, MNIST, J = 3",
            "",
            f"![figure 3]({png.name})",
            "",
            "Importance-sampled log p(x) of the first 1000 training and test points (the paper used an "
            "HMC-based estimator; MCEM is not run here).",
            "",
            "| algorithm | samples | train log p(x) | test log p(x) | K | paper (HMC, ~6.7e7 samples) train / test |",
            "|---|---|---|---|---|---|",
        ]
        for algorithm in ALGORITHMS:
            rows = _read_jsonl(root / "figure3-mnist" / algorithm / "marginal_likelihood.jsonl")
            if rows:
                r = rows[-1]
                p = PAPER_FIGURE3[algorithm]
                lines.append(
                    f"| {algorithm} | {r['samples_seen']:.2g} | {r['train_log_px']:.1f} | "
                    f"{r['test_log_px']:.1f} | {r['importance_samples']} | {p[0]} / {p[1]} |"
                )
        lines.append("")
    if notes is not None and notes.is_file():
        lines += [notes.read_text()]
    out.write_text("\n".join(lines) + "\n")
    return out


def _cpu_name() -> str:
    from .bench.op_suite import device_name

    return device_name("cpu") or platform.machine()
