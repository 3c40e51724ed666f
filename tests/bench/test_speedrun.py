"""benchmarks/speedrun.py: the time to each test bound, read from a real run's wall_s, and the
learning curve against seconds (a short CPU run on the synthetic data stands in for MNIST)."""

import json
from pathlib import Path

from testing import load_script

ROOT = Path(__file__).resolve().parents[2]


def load_speedrun():
    return load_script("benchmarks/speedrun.py")


def test_time_to_bounds_takes_the_first_evaluation_at_or_above_each():
    speedrun = load_speedrun()
    records = [
        {"samples_seen": 0, "test_elbo": -90.0, "wall_s": 0.0},  # the untrained model's: never counted
        {"samples_seen": 100, "test_elbo": -104.0, "wall_s": 1.5},
        {"samples_seen": 200, "test_elbo": -96.5, "wall_s": 3.0},
    ]
    reached = speedrun.time_to_bounds(records)
    assert reached["-110"] == {"wall_s": 1.5, "samples": 100} and reached["-105"] == reached["-110"]
    assert reached["-100"] == reached["-97"] == {"wall_s": 3.0, "samples": 200}
    assert reached["-95"] is None


def test_a_short_run_prints_its_times_and_plots_its_curve(tmp_path, capsys):
    speedrun = load_speedrun()
    out = tmp_path / "run"
    code = speedrun.main(
        [
            "--device",
            "cpu",
            "--batch-size",
            "50",
            "--samples",
            "2000",
            "--out",
            str(out),
            "--",
            "--dataset",
            "synthetic",
            "--hidden",
            "32",
            "--latent",
            "4",
            "--eval-every",
            "500",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "test bound" in printed and "the command took" in printed and "-97" in printed
    assert "sustained:" in printed
    assert (out / "learning_curve_wall.png").is_file()
    walls = [r["wall_s"] for r in speedrun.read_metrics(out)]
    assert walls == sorted(walls) and walls[-1] > 0


def test_save_to_appends_one_row_with_the_sustained_throughput(tmp_path):
    speedrun = load_speedrun()
    results = tmp_path / "out" / "speedrun.jsonl"
    results.parent.mkdir()
    argv = ["--device", "cpu", "--batch-size", "50", "--samples", "1000", "--out", str(tmp_path / "run")]
    argv += ["--save-to", str(results), "--", "--dataset", "synthetic", "--hidden", "16", "--latent", "2"]
    assert speedrun.main(argv) == 0 and speedrun.main(argv) == 0  # the same command twice: two rows
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 2
    records = rows[0]["records"]
    assert rows[0]["sustained_samples_per_s"] == records[-1]["samples_seen"] / records[-1]["wall_s"] > 0
