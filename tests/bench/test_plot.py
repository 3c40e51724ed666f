"""benchmarks/plot.py draws figures a README page shows readable: at most 900 px wide (a page is
~880 px), panels wrapped at most MAX_COLUMNS a row, no text below 7 pt (9 px tall at 100 dpi)."""

import json
import shutil
import struct
from pathlib import Path

import pytest

from testing import load_script

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def load_plot():
    return load_script("benchmarks/plot.py", "bench_plot")


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.mark.skipif(not (RESULTS / "AMD-EPYC" / "ops.jsonl").exists(), reason="no recorded CPU results")
@pytest.mark.slow
def test_figures_fit_a_page_with_panels_wrapped(tmp_path, monkeypatch):
    # The recorded CPU results (11 op panels; 9 were 2610 x 320 px in one row before), copied: nothing is
    # re-measured, and nothing is written outside tmp_path.
    shutil.copytree(RESULTS / "AMD-EPYC", tmp_path / "AMD-EPYC", ignore=shutil.ignore_patterns("*.png", "*.txt"))
    plot = load_plot()
    figures = {}
    save = plot._save

    def recording_save(fig, out):
        fig.canvas.draw()
        figures[out.name] = fig
        return save(fig, out)

    monkeypatch.setattr(plot, "_save", recording_save)
    assert plot.main([str(tmp_path)]) == 0
    assert {"speedup_float32.png", "bandwidth_float32.png", "train_step.png", "head.png"} <= set(figures)
    for name, fig in figures.items():
        width, height = png_size(tmp_path / "AMD-EPYC" / name)
        assert width <= 900 and height <= 1200, (name, width, height)
        panels = [ax for ax in fig.axes if ax.get_visible()]
        rows: dict[float, int] = {}
        for ax in panels:
            y = round(ax.get_position().y0, 2)
            rows[y] = rows.get(y, 0) + 1
        assert max(rows.values()) <= plot.MAX_COLUMNS, (name, rows)
        texts = [
            t
            for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
            if t.get_visible() and t.get_text()
        ]
        assert min(t.get_fontsize() for t in texts) >= 7, name
    speedup = figures["speedup_float32.png"]
    recorded = [json.loads(line) for line in (tmp_path / "AMD-EPYC" / "ops.jsonl").read_text().splitlines()]
    cases = {
        (r["op"], r.get("samples", 1)) for r in recorded if r["dtype"] == "float32" and r["mode"] == "forward+backward"
    }
    assert len([ax for ax in speedup.axes if ax.get_visible()]) == len(cases)  # every op and L has its panel
    # Each legend lies beside the panels, on none of them.
    for name, fig in figures.items():
        for legend in fig.legends:
            box = legend.get_window_extent()
            assert not any(box.overlaps(ax.get_window_extent()) for ax in fig.axes if ax.get_visible()), name


def test_markdown_tables_mark_noisy_rows_as_the_console_does(tmp_path):
    plot = load_script("benchmarks/plot.py", "bench_plot_noisy")

    def row(op, p80):
        timing = {p: {"median_s": 1e-3, "p20_s": 1e-3, "p80_s": p80} for p in ("aevb_fast", "eager", "compiled")}
        return {
            "op": op, "batch": 4096, "samples": 1, "dtype": "float32", "threads": 2, "repeats": 5,
            "date": "2026-12-05", "timing": timing, "speedup_vs_eager": 1.0, "speedup_vs_compiled": 1.0,
            "bandwidth_share": 0.5, "copy_gbps": 20.0,
        }  # fmt: skip

    (tmp_path / "cpu").mkdir()
    rows = [row("gaussian_kl", 1e-3), row("reparameterize", 2e-3)]  # p80/p20 = 2 > 1.5: noisy
    (tmp_path / "cpu" / "ops.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tables = plot.markdown_tables(tmp_path)
    assert "| reparameterize (noisy) | 1 | 4096 |" in tables and "| gaussian_kl | 1 | 4096 |" in tables
    assert "rows marked (noisy): p80/p20 > 1.5" in tables
