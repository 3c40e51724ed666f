"""PNG plots of the recorded benchmark results, from the newest row of each case, device and dtype:

- results/<device>/speedup_<dtype>.png: speed-up of the fused op against eager and compiled
  PyTorch vs batch size, forward+backward, one panel per op (and L), at most 3 panels a row
  (every figure at most 900 px wide, readable where a README page shows it);
- results/<device>/bandwidth_<dtype>.png: the fused op's effective GB/s (the bytes it must move
  over its time) vs batch size, against the copy bandwidth measured in the same run (before each case; the median line);
- results/<device>/train_step.png: samples/s of a whole training step per provider vs batch
  size, and the share of the step spent in the ELBO pieces (from train.jsonl);
- results/<device>/head.png: time and peak memory of the fused head per provider (head.jsonl).
Points whose timings spread too widely to trust (p80/p20 > 1.5) are ringed in red, as the tables
mark them "noisy".

    python benchmarks/plot.py [results_dir]
    python benchmarks/plot.py --markdown [results_dir]   # the README's tables instead, from the same rows
"""

from __future__ import annotations

import json
import statistics
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from aevb_fast.bench.harness import NOISY_NOTE, NOISY_SPREAD, noisy  # noqa: E402

# The panels' order and which ops take L: the op suite's registry (aevb_fast.bench.op_suite).
from aevb_fast.bench.op_suite import OPS as OP_ORDER  # noqa: E402
from aevb_fast.bench.op_suite import SAMPLING_OPS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def latest_runs(path: Path) -> dict[str, list[dict]]:
    """The forward+backward rows of one ops results file by dtype: of the thread count most rows
    were measured with (a figure or table states one), the row of each case (op, L, batch) with
    the most repeats, the newest of those, so that a run of a few cases updates the plot without
    hiding the others, and a quick run of few repeats does not stand for a careful one."""
    rows = [r for r in read_rows(path) if r.get("mode", "forward+backward") == "forward+backward"]
    if not rows:
        return {}
    threads = Counter(r["threads"] for r in rows).most_common(1)[0][0]
    newest: dict[tuple, dict] = {}
    for row in rows:
        if row["threads"] != threads:
            continue
        key = (row["dtype"], row["op"], row.get("samples", 1), row["batch"])
        rank = (row.get("repeats") or 0, row["date"])
        if key not in newest or rank >= (newest[key].get("repeats") or 0, newest[key]["date"]):
            newest[key] = row
    by_dtype: dict[str, list[dict]] = defaultdict(list)
    for (dtype, *_), row in sorted(newest.items(), key=lambda item: str(item[0])):
        by_dtype[dtype].append(row)
    return dict(by_dtype)


def _panels(rows: list[dict]) -> list[tuple[str, int]]:
    return sorted({(r["op"], r.get("samples", 1)) for r in rows})


def _points(rows: list[dict], op: str, samples: int) -> list[dict]:
    return sorted((r for r in rows if r["op"] == op and r.get("samples", 1) == samples), key=lambda r: r["batch"])


# At most this many panels in a row: a figure 9 inches wide at 100 dpi is 900 px, which a README
# page shows about as drawn, so that its titles and ticks stay readable.
MAX_COLUMNS = 3
PANEL_WIDTH, PANEL_HEIGHT = 3.0, 2.6  # inches


def _figure(panels: list, title: str):
    """A grid of at most MAX_COLUMNS panels a row; the unused cells of the last row are hidden."""
    columns = min(len(panels), MAX_COLUMNS)
    rows = -(-len(panels) // columns)
    title = textwrap.fill(title, int(13 * PANEL_WIDTH * columns))  # ~13 characters an inch at 10 pt
    fig, axes = plt.subplots(
        rows,
        columns,
        squeeze=False,
        figsize=(PANEL_WIDTH * columns, PANEL_HEIGHT * rows + 0.3 + 0.2 * title.count("\n")),
    )
    fig.suptitle(title, fontsize=10)
    axes = list(axes.flat)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig, axes[: len(panels)]


def _legend_below(fig, axes, columns: int | None = None) -> None:
    """One legend for the panels, in rows of `columns` entries under them, where it covers no point."""
    entries: dict[str, object] = {}  # label -> handle, over every panel (a noisy mark may be in one)
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    labels, handles = list(entries), list(entries.values())
    columns = columns or min(len(labels), max(1, int(fig.get_figwidth() / 2.2)))  # ~2.2 inches an entry
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    below = 0.1 + 0.2 * -(-len(labels) // columns)  # inches: a margin and the legend's lines
    fig.set_figheight(fig.get_figheight() + below)
    fig.tight_layout(rect=(0, below / fig.get_figheight(), 1, 1))


def _save(fig, out: Path) -> Path:
    if not fig.legends:
        fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _label_panel(ax, op: str, samples: int) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range's minor labels run into each other
    ax.set_title(op + (f", L={samples}" if op in SAMPLING_OPS else ""), fontsize=9)
    ax.set_xlabel("batch size")


def _mark_noisy(ax, points: list[dict], values: list[float]) -> None:
    """Rings the points whose timings spread too widely to trust, as the tables mark them."""
    marked = [(r["batch"], v) for r, v in zip(points, values) if noisy(r["timing"])]
    if marked:
        ax.plot(*zip(*marked), "o", ms=11, mfc="none", mec="red", label=f"noisy (p80/p20 > {NOISY_SPREAD:g})")


def plot_speedup(rows: list[dict], out: Path) -> Path:
    panels = _panels(rows)
    fig, axes = _figure(
        panels,
        f"{rows[0]['device']}, {rows[0]['dtype']}, forward+backward, {rows[0]['date'][:10]}: speed-up of aevb_fast",
    )
    for ax, (op, samples) in zip(axes, panels):
        points = _points(rows, op, samples)
        batches = [r["batch"] for r in points]
        for key, style, label in (
            ("speedup_vs_eager", "o-C0", "vs eager"),
            ("speedup_vs_compiled", "s--C1", "vs compiled"),  # colours fixed: a noisy ring takes none
        ):
            ax.plot(batches, [r[key] for r in points], style, label=label)
            _mark_noisy(ax, points, [r[key] for r in points])
        ax.axhline(1.0, color="gray", lw=0.8)
        _label_panel(ax, op, samples)
    for ax in axes[::MAX_COLUMNS]:
        ax.set_ylabel("speed-up (x, higher\nis better)")
    _legend_below(fig, axes)
    return _save(fig, out)


def plot_bandwidth(rows: list[dict], out: Path) -> Path:
    panels = _panels(rows)
    fig, axes = _figure(
        panels,
        f"{rows[0]['device']}, {rows[0]['dtype']}, forward+backward: effective "
        f"bandwidth (bytes the op must move / time)",
    )
    for ax, (op, samples) in zip(axes, panels):
        points = _points(rows, op, samples)
        batches = [r["batch"] for r in points]
        ax.plot(batches, [r["gbps"] for r in points], "o-C0", label="aevb_fast")
        _mark_noisy(ax, points, [r["gbps"] for r in points])
        for provider, style in (("eager", "s:C1"), ("compiled", "^:C2")):
            ax.plot(
                batches,
                [r["bytes_moved"] / r["timing"][provider]["median_s"] / 1e9 for r in points],
                style,
                label=provider,
            )
        ax.axhline(
            statistics.median(r["copy_gbps"] for r in points),
            color="black",
            lw=1,
            ls="--",
            label="copy (same run, median over cases)",
        )
        ax.set_ylim(bottom=0)
        _label_panel(ax, op, samples)
    for ax in axes[::MAX_COLUMNS]:
        ax.set_ylabel("GB/s")
    _legend_below(fig, axes)
    return _save(fig, out)


def plot_train(path: Path) -> Path | None:
    rows = _newest_train_rows(path)  # the newest row of each batch size
    if not rows:
        return None
    last = max(r["date"] for r in rows)
    batches = [r["batch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.2))
    for provider in _providers(rows):
        points = [(r["batch"], r["timing"][provider]["samples_per_s"]) for r in rows if provider in r["timing"]]
        left.plot(*zip(*points), "o-", label=provider)
    left.set(xscale="log", xlabel="batch size", ylabel="training samples / s", title="one AEVB step (MNIST model)")
    regions = (("elbo", "C0"), ("encoder", "C1"), ("decoder", "C2"), ("optimizer", "C3"))
    providers = (("fused", "o-"), ("reference", "s--"))
    for provider, style in providers:
        for region, color in regions:
            right.plot(batches, [100 * r["profile_shares"][provider][region] for r in rows], style, color=color)
    right.set(xscale="log", xlabel="batch size", ylabel="% of the step", title="where the step's time goes")
    # Each legend under its panel, off the lines; the right one's colour is the region, its line the provider.
    below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)
    left.legend(**below)
    right.legend(
        [Line2D([], [], color=color) for _, color in regions]
        + [Line2D([], [], color="gray", marker=style[0], ls=style[1:]) for _, style in providers],
        [region for region, _ in regions] + [provider for provider, _ in providers],
        **below,
    )
    fig.suptitle(f"{rows[0]['device']}, {rows[0]['threads']} threads, {last[:10]}", fontsize=10)
    return _save(fig, path.parent / "train_step.png")


def _providers(rows: list[dict]) -> list[str]:
    """Every provider of the rows, in the order they first appear (older runs had fewer)."""
    return list(dict.fromkeys(p for r in rows for p in r["timing"]))


def plot_head(path: Path) -> Path | None:
    """head.png: time and peak memory of the output layer + likelihood, per provider and case."""
    rows = _newest_train_rows(path, key=lambda r: (r["batch"], r["samples"]))
    if not rows:
        return None
    providers = _providers(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    width = 0.8 / len(providers)
    for i, provider in enumerate(providers):
        xs = [k + i * width for k in range(len(rows))]
        left.bar(xs, [1e3 * r["timing"][provider]["median_s"] for r in rows], width, label=provider)
        right.bar(xs, [r["peak_bytes"][provider] / 1e6 for r in rows], width, label=provider)
    labels = [f"B={r['batch']}\nL={r['samples']}" for r in rows]
    for ax, title in ((left, "forward+backward, ms"), (right, "peak memory, MB")):
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(rows))], labels)
        ax.set_title(title, fontsize=9)
    left.legend(fontsize=7)
    fig.suptitle(
        f"decoder output layer + Bernoulli likelihood (D={rows[0]['data']}, H={rows[0]['hidden']}), "
        f"{rows[0]['device']}, {rows[0]['threads']} threads, {max(r['date'] for r in rows)[:10]}",
        fontsize=9,
    )
    return _save(fig, path.parent / "head.png")


def _newest_train_rows(path: Path, key=lambda r: r["batch"]) -> list[dict]:
    newest: dict = {}
    for r in read_rows(path):
        if key(r) not in newest or r["date"] >= newest[key(r)]["date"]:
            newest[key(r)] = r
    return [newest[k] for k in sorted(newest)]


def markdown_tables(root: Path) -> str:
    """The README's tables: float32 ops at B >= 4096 and the training step, newest row of each case."""
    out = []
    for path in sorted(root.glob("*/ops.jsonl")):
        rows = [r for r in latest_runs(path).get("float32", []) if r["batch"] >= 4096]
        out += [
            f"{path}:",
            "",
            "| op | L | B | aevb_fast | eager | compiled | vs eager | vs compiled | share of copy GB/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(
            rows,
            key=lambda r: (OP_ORDER.index(r["op"]) if r["op"] in OP_ORDER else 99, r.get("samples", 1), r["batch"]),
        ):
            t = r["timing"]
            mark = " (noisy)" if noisy(t) else ""  # as the console table marks it
            out.append(
                f"| {r['op']}{mark} | {r.get('samples', 1)} | {r['batch']} | "
                + " | ".join(f"{1e3 * t[p]['median_s']:.3f} ms" for p in ("aevb_fast", "eager", "compiled"))
                + f" | {r['speedup_vs_eager']:.2f}x | {r['speedup_vs_compiled']:.2f}x | {100 * r['bandwidth_share']:.0f}% |"
            )
        copy = sorted(r["copy_gbps"] for r in rows)
        if any(noisy(r["timing"]) for r in rows):
            out.append(f"\nrows marked (noisy): {NOISY_NOTE.removeprefix('noisy: ')}")
        out.append(
            f"\ncopy bandwidth {copy[0]:.1f}-{copy[-1]:.1f} GB/s, {rows[0]['threads']} threads\n" if rows else ""
        )
    for path in sorted(root.glob("*/train.jsonl")):
        rows = _newest_train_rows(path)
        providers = _providers(rows)
        out += [
            f"{path} (training samples/s; peak MB where measured):",
            "",
            "| batch | " + " | ".join(providers) + " | fused vs reference | ELBO share, fused / reference |",
            "|---:|" + "---:|" * (len(providers) + 2),
        ]
        for r in rows:
            t, shares, peak = r["timing"], r["profile_shares"], r.get("peak_bytes", {})
            cells = [
                (f"{t[p]['samples_per_s']:,.0f}" if p in t else "-")
                + (f" ({peak[p] / 1e6:,.0f} MB)" if p in peak else "")
                for p in providers
            ]
            out.append(
                f"| {r['batch']} | "
                + " | ".join(cells)
                + f" | {r['fused_vs_reference']:.2f}x | {100 * shares['fused']['elbo']:.1f}% / "
                f"{100 * shares['reference']['elbo']:.1f}% |"
            )
        out.append("")
    for path in sorted(root.glob("*/head.jsonl")):
        rows = _newest_train_rows(path, key=lambda r: (r["batch"], r["samples"]))
        providers = _providers(rows)
        out += [
            f"{path} (decoder output layer + Bernoulli likelihood, forward+backward):",
            "",
            "| B | L | "
            + " | ".join(f"{p} ms" for p in providers)
            + " | "
            + " | ".join(f"{p} MB" for p in providers)
            + " |",
            "|---:|---:|" + "---:|" * (2 * len(providers)),
        ]
        for r in rows:
            out.append(
                f"| {r['batch']} | {r['samples']} | "
                + " | ".join(
                    f"{1e3 * r['timing'][p]['median_s']:.1f} ({r['time_vs_eager'][p]:.2f}x)" for p in providers
                )
                + " | "
                + " | ".join(f"{r['peak_bytes'][p] / 1e6:,.0f} ({r['memory_vs_eager'][p]:.2f}x)" for p in providers)
                + " |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if argv[:1] == ["--markdown"]:
        print(markdown_tables(Path(argv[1]) if len(argv) > 1 else RESULTS))
        return 0
    root = Path(argv[0]) if argv else RESULTS
    written = []
    for path in sorted(root.glob("*/ops.jsonl")):
        for dtype, rows in latest_runs(path).items():
            written.append(plot_speedup(rows, path.parent / f"speedup_{dtype}.png"))
            written.append(plot_bandwidth(rows, path.parent / f"bandwidth_{dtype}.png"))
    for path in sorted(root.glob("*/train.jsonl")):
        out = plot_train(path)
        if out:
            written.append(out)
    for path in sorted(root.glob("*/head.jsonl")):
        out = plot_head(path)
        if out:
            written.append(out)
    if not written:
        print(f"plot: no results under {root}; run `aevb-fast bench --save` first", file=sys.stderr)
        return 1
    for out in written:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
