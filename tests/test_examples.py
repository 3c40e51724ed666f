"""The programs in examples/ run as their docstrings say (a few steps each)."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from testing import needs_data

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def average_loss(out: str) -> float:
    return float(re.search(r"Average loss: ([0-9.]+)", out).group(1))


@needs_data("mnist")
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
def test_hvae_trains_both_ways_and_compares(tmp_path, capsys):
    hvae = load("hvae")
    common = ["--max-steps", "3", "--batch-size", "16", "--width", "16", "--zdim", "4", "--log-interval", "1",
              "--test-images", "64"]
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
        assert sum(e.name == "aevb_fast::sample_and_kl" for e in prof.events()) == expected
    args = ["--compare", "--batch-sizes", "8,16", "--repeats", "1", "--width", "16", "--zdim", "4",
            "--out", str(tmp_path)]
    assert hvae.main(args) == 0
    out = capsys.readouterr().out
    assert float(re.search(r"relative difference ([0-9.e+-]+)", out).group(1)) < 1e-5
    assert len(re.findall(r"^ +(8|16) (fused|reference) ", out, re.M)) == 4
    assert (tmp_path / "hvae_compare.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        hvae.main(["--compare", "--batch-sizes", "8"])
