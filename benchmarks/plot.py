"""PNG plots of the recorded benchmark results (benchmarks/results/<device>/ops.jsonl):
speed-up against eager and compiled PyTorch vs batch size, one panel per op, one file per
device and dtype; and the effective bandwidth as a share of the copy bandwidth measured in the
same run. Only the latest run of each (device, dtype) is plotted.

    python benchmarks/plot.py [results_dir]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def latest_runs(path: Path) -> dict[str, list[dict]]:
    """The rows of the most recent run of each dtype in one results file."""
    by_dtype: dict[str, list[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_dtype[row["dtype"]].append(row)
    latest = {}
    for dtype, rows in by_dtype.items():
        last_date = max(r["date"] for r in rows)
        latest[dtype] = [r for r in rows if r["date"] == last_date]
    return latest


def plot_device(path: Path) -> list[Path]:
    written = []
    for dtype, rows in latest_runs(path).items():
        ops = sorted({r["op"] for r in rows})
        fig, axes = plt.subplots(1, len(ops), figsize=(3.2 * len(ops), 3.2), squeeze=False)
        for ax, op in zip(axes[0], ops):
            points = sorted((r for r in rows if r["op"] == op), key=lambda r: r["batch"])
            batches = [r["batch"] for r in points]
            ax.plot(batches, [r["speedup_vs_eager"] for r in points], "o-", label="vs eager")
            ax.plot(batches, [r["speedup_vs_compiled"] for r in points], "s--", label="vs compiled")
            if all("bandwidth_share" in r for r in points):
                ax.plot(batches, [r["bandwidth_share"] for r in points], "^:", label="share of copy GB/s")
            ax.axhline(1.0, color="gray", lw=0.8)
            ax.set_xscale("log")
            ax.set_title(op, fontsize=9)
            ax.set_xlabel("batch size")
        axes[0][0].set_ylabel("speed-up (x) / bandwidth share")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"{rows[0]['device']}, {dtype}, forward+backward, {rows[0]['date'][:10]}", fontsize=10)
        fig.tight_layout()
        out = path.parent / f"speedup_{dtype}.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    return written


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else RESULTS
    files = sorted(root.glob("*/ops.jsonl"))
    if not files:
        print(f"plot: no results under {root}; run `aevb-fast bench --save` first", file=sys.stderr)
        return 1
    for path in files:
        for out in plot_device(path):
            print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
