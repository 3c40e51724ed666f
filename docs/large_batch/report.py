"""The README's batch-size table and learning-curve plot, read from the runs' logs:

    python docs/large_batch/report.py

Every large-batch figure comes from a dedicated run of that budget (`table.sh` here makes them):
a run of 2 x 10^6 samples is not the first fifth of a run of 10^7, since the learning-rate
schedule follows --samples. M = 100 is the paper's recipe (Adagrad at a constant rate, so its
bound at 2 x 10^6 is the same in any run), read from the reproduction's J = 20 run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aevb_fast.training import read_metrics  # noqa: E402

HERE = Path(__file__).resolve().parent
PAPER_RUN = HERE.parent / "reproduction" / "runs" / "figure2-mnist" / "aevb-j20"
BATCHES = (4096, 16384)
BUDGETS = {2_000_000: "2e6", 10_000_000: "1e7"}


def run_dir(batch: int, budget: str, seed: int = 0) -> Path:
    return HERE / "runs" / f"mnist-b{batch}-n{budget}" if seed == 0 else HERE / "runs" / f"mnist-b{batch}-n{budget}-s{seed}"


def final_bound(run: Path) -> str:
    records = read_metrics(run) if run.is_dir() else []
    return f"{records[-1]['test_elbo']:.1f}" if records else "-"


def at(records: list[dict], samples: float) -> dict:
    """The first evaluation at or past `samples` training examples."""
    return next(r for r in records if r["samples_seen"] >= samples)


def table() -> str:
    lines = ["| M | recipe | dedicated run of 2 x 10^6 (seed 0 / 1) | dedicated run of 10^7 (seed 0 / 1) |",
             "|---:|---|---:|---:|"]
    paper = read_metrics(PAPER_RUN)
    lines.append(f"| 100 | paper: Adagrad 0.02, constant | {at(paper, 2e6)['test_elbo']:.1f} | "
                 f"{at(paper, 1e7)['test_elbo']:.1f} |")
    for batch in BATCHES:
        cells = []
        for budget in BUDGETS.values():
            seeds = [final_bound(run_dir(batch, budget, seed)) for seed in (0, 1)]
            cells.append(" / ".join(s for s in seeds if s != "-") or "-")
        lines.append(f"| {batch} | Adam 1e-2, warm-up, stable, decay (wsd) | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def plot(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for batch in BATCHES:
        for budget, name in BUDGETS.items():
            records = read_metrics(run_dir(batch, name)) if run_dir(batch, name).is_dir() else []
            if records:
                ax.plot([r["samples_seen"] for r in records], [r["test_elbo"] for r in records], "o-" if budget < 1e7 else "-",
                        markersize=3, label=f"M = {batch}, --samples {name}")
    paper = [r for r in read_metrics(PAPER_RUN) if r["samples_seen"] <= 1e7]
    ax.plot([r["samples_seen"] for r in paper], [r["test_elbo"] for r in paper], "k:", label="M = 100 (paper)")
    ax.set_xscale("symlog", linthresh=1e5)
    ax.set(ylim=(-160, -90))
    ax.set_xlabel("training samples", fontsize=12)
    ax.set_ylabel("MNIST test bound (nats)", fontsize=12)
    ax.set_title("J = 20, H = 500, the default recipe per batch size and budget", fontsize=13)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    print(table())
    plot(HERE / "learning_curves.png")
    print(f"wrote {HERE / 'learning_curves.png'}", file=sys.stderr)
