"""Time to quality (issue 31): how long one MNIST training run takes to reach each test bound,
counted from its first training step (evaluations and checkpoints included: the trainer's
``wall_s``), with the command's whole time (start-up, data loading, the initial evaluation) beside
it. The settings are the large-batch recipe that reaches -96.8 nats at 10^7 samples.

    python benchmarks/speedrun.py --device cuda                     # the record's settings
    python benchmarks/speedrun.py --device cuda --save              # and append it to the results
    python benchmarks/speedrun.py --device cuda --save-to F.jsonl   # or to this file
    python benchmarks/speedrun.py --device cpu --samples 200000     # a short run anywhere
    python benchmarks/speedrun.py --device cuda -- --lr 0.02        # any `aevb-fast train` option after --

Prints the seconds to each bound of BOUNDS and the run's sustained training samples per second,
and writes the test bound against wall-clock seconds to <out>/learning_curve_wall.png; ``--save``
appends one line (settings, date, torch, results) to benchmarks/results/<device>/speedrun.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from aevb_fast import cli  # noqa: E402
from aevb_fast.bench.op_suite import device_name, results_path  # noqa: E402
from aevb_fast.training import read_metrics  # noqa: E402

BOUNDS = (-110.0, -105.0, -100.0, -97.0, -95.0, -93.0, -91.0)  # nats per test image


def time_to_bounds(records: list[dict]) -> dict[str, dict | None]:
    """For each bound, the first evaluation at or above it: its wall_s and samples_seen (None:
    never reached)."""
    reached = {}
    for bound in BOUNDS:
        first = next((r for r in records if r["samples_seen"] > 0 and r["test_elbo"] >= bound), None)
        reached[f"{bound:g}"] = None if first is None else {"wall_s": first["wall_s"], "samples": first["samples_seen"]}
    return reached


def sustained_samples_per_s(records: list[dict]) -> float:
    """Training samples per second of the whole run (the last record's samples over its wall_s:
    evaluations and checkpoints included), to set against the bench's bare step (issue 31's 90 %)."""
    last = records[-1]
    return last["samples_seen"] / last["wall_s"] if last["wall_s"] > 0 else 0.0


def plot_curve(records: list[dict], title: str, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    points = [(r["wall_s"], r["test_elbo"]) for r in records if r["samples_seen"] > 0]
    ax.plot(*zip(*points), "o-", markersize=3)
    for bound in BOUNDS:
        ax.axhline(bound, color="gray", lw=0.5, ls=":")
    best = max(r["test_elbo"] for r in records)
    ax.set(
        xlabel="seconds from the first step (evaluations included)",
        ylabel="test ELBO (nats)",
        title=title,
        ylim=(max(min(p[1] for p in points), best - 40), best + 3),
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--out", default=None, help="run directory (default runs/speedrun-<device>; replaced)")
    parser.add_argument("--save", action="store_true", help="append the result to benchmarks/results/<device>/")
    parser.add_argument(
        "--save-to", default=None, help="append the result to this JSON-lines file instead (the GPU check's $OUT)"
    )
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    out = Path(args.out or f"runs/speedrun-{args.device.replace(':', '')}")
    command = [
        "train",
        "--dataset",
        "mnist",
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--samples",
        str(args.samples),
        "--out",
        str(out),
        "--overwrite",
        "--no-plots",
        *extra,
    ]
    start = time.perf_counter()
    code = cli.main(command)
    total = time.perf_counter() - start
    if code != 0:
        print(f"speedrun: aevb-fast {' '.join(command)} exited with {code}", file=sys.stderr)
        return code
    records = read_metrics(out)
    reached = time_to_bounds(records)
    best = max(records, key=lambda r: r["test_elbo"])
    print(f"speedrun: aevb-fast {' '.join(command)}")
    print(f"{'test bound':>10} {'seconds':>9} {'samples':>12}")
    for bound, at in reached.items():
        print(
            f"{bound:>10} " + (f"{at['wall_s']:>9.2f} {at['samples']:>12,}" if at else f"{'-':>9} {'not reached':>12}")
        )
    print(
        f"best {best['test_elbo']:.2f} at {best['wall_s']:.2f} s ({best['samples_seen']:,} samples); "
        f"the command took {total:.1f} s in all (start-up, data, the first evaluation included)"
    )
    sustained = sustained_samples_per_s(records)
    print(f"sustained: {sustained:,.0f} training samples/s over the run (evaluations and checkpoints included)")
    title = f"M = {args.batch_size}, {device_name(args.device)}"
    figure = plot_curve(records, title, out / "learning_curve_wall.png")
    print(f"learning curve: {figure}")
    if args.save or args.save_to:
        path = Path(args.save_to) if args.save_to else results_path(args.device).with_name("speedrun.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "command": "aevb-fast " + " ".join(command),
            "reached": reached,
            "best_test_elbo": best["test_elbo"],
            "best_wall_s": best["wall_s"],
            "command_s": total,
            "sustained_samples_per_s": sustained,
            "records": records,
        }
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"saved: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
