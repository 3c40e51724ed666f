"""The programs in examples/ run as their docstrings say (a few steps each)."""

import importlib.util
import re
from pathlib import Path

import pytest

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
