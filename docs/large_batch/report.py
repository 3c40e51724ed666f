"""The README's batch-size table and learning-curve plot, read from the runs' logs:

    python docs/large_batch/report.py

M = 100 is the paper's recipe, read from the reproduction's J = 20 run (the same trainer and
defaults); the other rows are the runs under docs/large_batch/runs, made by `table.sh` here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aevb_fast.training import read_metrics  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = {
    100: HERE.parent / "reproduction" / "runs" / "figure2-mnist" / "aevb-j20",
    1024: HERE / "runs" / "mnist-b1024-n1e7",
    4096: HERE / "runs" / "mnist-b4096-n1e7",
    16384: HERE / "runs" / "mnist-b16384-n1e7",
}


def at(records: list[dict], samples: float) -> dict:
    """The first evaluation at or past `samples` training examples."""
    return next(r for r in records if r["samples_seen"] >= samples)


def table() -> str:
    lines = ["| M | recipe | test bound at 2 x 10^6 | at 10^7 | samples/s | wall time to 10^7 |",
             "|---:|---|---:|---:|---:|---:|"]
    for batch, run in RUNS.items():
        records = read_metrics(run)
        if not records or records[-1]["samples_seen"] < 1e7:
            lines.append(f"| {batch} | | not measured yet (docs/large_batch/table.sh) | | | |")
            continue
        two, end = at(records, 2e6), at(records, 1e7)
        recipe = "paper: Adagrad 0.02" if batch <= 256 else f"Adam {max(r['lr'] for r in records):.0e}, cosine"
        rate = end["samples_seen"] / end["train_wall_s"]
        lines.append(f"| {batch} | {recipe} | {two['test_elbo']:.1f} | {end['test_elbo']:.1f} | "
                     f"{rate:,.0f} | {end['train_wall_s'] / 60:.1f} min |")
    return "\n".join(lines)


def plot(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for batch, run in RUNS.items():
        points = [r for r in read_metrics(run) if r["samples_seen"] > 0]
        if points:
            ax.plot([r["samples_seen"] for r in points], [r["test_elbo"] for r in points], label=f"M = {batch}")
    ax.set(xscale="log", ylim=(-160, -90), xlabel="training samples", ylabel="MNIST test bound (nats)",
           title="J = 20, H = 500, default recipe per batch size")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    print(table())
    plot(HERE / "learning_curves.png")
    print(f"wrote {HERE / 'learning_curves.png'}", file=sys.stderr)
