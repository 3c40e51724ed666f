"""The programs in examples/ run as their docstrings say (a few steps each)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from testing import load_script, needs_data

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str):
    return load_script(f"examples/{name}.py")


def average_loss(out: str) -> float:
    return float(re.search(r"Average loss: ([0-9.]+)", out).group(1))


@needs_data("mnist")
@pytest.mark.slow
def test_vae_main_fused_and_reference_train_alike(tmp_path, capsys):
    vae_main = load("vae_main")
    common = ["--epochs", "1", "--max-steps", "40", "--log-interval", "20"]
    assert vae_main.main(common + ["--out", str(tmp_path / "fused")]) == 0
    fused = capsys.readouterr().out
    assert vae_main.main(common + ["--reference", "--out", str(tmp_path / "reference")]) == 0
    reference = capsys.readouterr().out
    assert "Test set loss" in fused and (tmp_path / "fused" / "epoch_1.png").stat().st_size > 1000
    # same seed, same data order; only the noise differs: the average loss agrees within 3%
    assert abs(average_loss(fused) - average_loss(reference)) < 0.03 * average_loss(reference)
    assert average_loss(fused) < 544  # below 784 log 2, the loss of an untrained decoder


def test_vae_main_refuses_bad_flags(tmp_path, capsys):
    vae_main = load("vae_main")
    with pytest.raises(SystemExit) as exit_:
        vae_main.main(["--epochs", "0"])
    assert exit_.value.code == 2


@needs_data("binarized_mnist")
@pytest.mark.slow
def test_hvae_trains_both_ways(tmp_path, capsys):
    hvae = load("hvae")
    common = [
        "--max-steps",
        "3",
        "--batch-size",
        "16",
        "--width",
        "16",
        "--zdim",
        "4",
        "--log-interval",
        "1",
        "--test-images",
        "64",
    ]
    assert hvae.main(common) == 0
    fused = capsys.readouterr().out
    assert hvae.main(common + ["--reference"]) == 0
    reference = capsys.readouterr().out
    for out in (fused, reference):
        losses = [float(v) for v in re.findall(r"loss ([0-9.]+) nats", out)]
        assert len(losses) >= 4 and all(0 < v < 1e5 for v in losses)
    # The fused model runs the fused op at each of its 8 layers; the reference runs none.
    model, x = hvae.HierarchicalVAE(16, 4), torch.rand(4, 1, 28, 28).bernoulli()
    for fused_ops, expected in ((True, 8), (False, 0)):
        with torch.profiler.profile() as prof:
            model(x, fused_ops)
        # Calls from Python, not the same op's dispatch to its kernel nested inside one.
        calls = [
            e
            for e in prof.events()
            if e.name == "aevb_fast::sample_and_kl" and (e.cpu_parent is None or e.cpu_parent.name != e.name)
        ]
        assert len(calls) == expected


@needs_data("binarized_mnist")
@pytest.mark.slow
def test_hvae_compare_writes_only_its_figure_and_no_profiler_lines(tmp_path):
    # Run from an empty folder with the default --out: the figure is the one file it makes, under
    # runs/ (which the repository's .gitignore ignores), and the console has the table, without
    # the profiler's "USDT ... profiler_start" lines or CPUAllocator's warning.
    args = ["--compare", "--batch-sizes", "4,8", "--repeats", "1", "--width", "8", "--zdim", "2"]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "hvae.py"), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert float(re.search(r"relative difference ([0-9.e+-]+)", out).group(1)) < 1e-5
    assert len(re.findall(r"^ +(4|8) (fused|reference) ", out, re.M)) == 4
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert made == ["runs/hvae-compare/hvae_compare.png"]
    assert "figure: runs/hvae-compare/hvae_compare.png" in out
    assert (tmp_path / made[0]).stat().st_size > 1000
    for noise in ("USDT", "profiler_start", "profiler_stop", "CPUAllocator", "Memory block of unknown size"):
        assert noise not in out + result.stderr, result.stderr
    # Every line on stderr is the data loader's note of the files it reads.
    assert all(line.startswith("aevb_fast.data: ") for line in result.stderr.splitlines()), result.stderr


def test_hvae_profiler_filter_keeps_other_stderr_lines(capfd):
    hvae = load("hvae")
    with hvae.profiler_markers_dropped():
        os.write(2, b"USDT:2026-12-04 17:51:47 4096:4096 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        os.write(2, b"[W1204 17:53:25.52 Foo.cpp:1] a warning that must show\n")
    err = capfd.readouterr().err
    assert "profiler_start" not in err and "a warning that must show" in err


def test_hvae_legend_beside_the_bars():
    hvae = load("hvae")
    rows = [
        {"batch": b, "ops": ops, "step_s": 0.01 * (1 + k), "peak_bytes": 2**20 * b, "sampling_share": 0.1}
        for b in (32, 128)
        for k, ops in enumerate(("fused", "reference"))
    ]
    fig = hvae.figure(rows)
    fig.canvas.draw()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 1
    box = legends[0].get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent()), "the legend lies on a panel"
    assert fig.get_figwidth() * 90 <= 900  # readable at page width (saved at 90 dpi)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--lr", "inf"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--lr", "-1e-3"], "--lr"),
        (["--max-steps", "0"], "--max-steps"),
        (["--max-steps", "-2"], "--max-steps"),
        (["--log-interval", "0"], "--log-interval"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "1.5"], "--batch-size"),
        (["--repeats", "0"], "--repeats"),
        (["--width", "3"], "--width"),
        (["--zdim", "0"], "--zdim"),
        (["--test-images", "-1"], "--test-images"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**70)], "--seed"),
        (["--compare", "--batch-sizes", "8"], "--batch-sizes"),
        (["--compare", "--reference"], "--reference"),
        (["--compare", "--out", "a-file"], "--out"),
    ],
)
def test_hvae_refuses_bad_options_in_one_line(argv, says, tmp_path, monkeypatch, capsys):
    hvae = load("hvae")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")

    def load_data(data_dir):
        raise AssertionError("the options were accepted: it went on to read the data")

    monkeypatch.setattr(hvae, "load_data", load_data)
    with pytest.raises(SystemExit) as exit_:
        hvae.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing made


def test_hvae_default_out_is_git_ignored(capsys):
    # --compare's default folder, made in the repository's root or in examples/, stays out of
    # `git status`, and --help says where the figure goes.
    hvae = load("hvae")
    with pytest.raises(SystemExit) as exit_:
        hvae.main(["--help"])
    assert exit_.value.code == 0
    assert "default runs/hvae-compare" in " ".join(capsys.readouterr().out.split())
    root = EXAMPLES.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("runs/hvae-compare/hvae_compare.png", "examples/runs/hvae-compare/hvae_compare.png"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0, path
