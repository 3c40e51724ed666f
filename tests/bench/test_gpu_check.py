"""benchmarks/gpu_check.sh keeps to its time budget and says what it skipped. The whole dry run
(every step with the GPU run's flags) is a CI step of its own (.ci/run), not a test."""

import gzip
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


def run_script(*args, out: Path, budget: int | None = None, **extra_env: str):
    env = {**os.environ, "OUT": str(out), **extra_env}
    if budget is not None:
        env["GPU_CHECK_BUDGET_S"] = str(budget)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_a_spent_budget_skips_the_remaining_steps_and_fails(tmp_path):
    # 40 s: the build step (a pip --dry-run of the install, seconds, or tens on a loaded machine)
    # gets up to 35 s; what it leaves goes to the tests, cut at the budget; the rest is skipped.
    result = run_script("--dry-run", out=tmp_path, budget=40)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = (tmp_path / "summary.txt").read_text().splitlines()
    steps = [line.split()[0] for line in lines if " exit " in line]
    assert steps == [
        "build",
        "tests",
        "memcheck_probe",
        "memcheck",
        "noise_cost",
        "bench_ops",
        "bench_prior",
        "bench_summed",
        "bench_head",
        "bench_train",
        "speedrun",
    ]
    assert lines[0].startswith("build") and "exit 0" in lines[0], lines[0]
    assert "skipped: 40 s budget spent" in lines[8]
    assert (tmp_path / "logs.tar").exists()


def test_an_unknown_argument_is_a_one_line_error(tmp_path):
    result = run_script("--dryrun", out=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu_check: unknown argument '--dryrun' (use --dry-run, --prepare or --help)"


def test_prepare_gzips_mnist_into_the_folder_a_device_call_carries(tmp_path):
    source = tmp_path / "data" / "mnist"
    source.mkdir(parents=True)
    (source / "train-images-idx3-ubyte").write_bytes(b"train images")  # gzipped here
    (source / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"test images"))  # copied
    carry = tmp_path / "carry"
    env = {"AEVB_FAST_DATA": str(tmp_path / "data"), "GPU_CHECK_DATA_DIR": str(carry)}
    result = run_script("--prepare", out=tmp_path / "out", **env)
    assert result.returncode == 0, result.stderr
    assert f'carry=["{carry}"]' in result.stdout
    assert gzip.decompress((carry / "mnist" / "train-images-idx3-ubyte.gz").read_bytes()) == b"train images"
    assert gzip.decompress((carry / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()) == b"test images"
    assert not (tmp_path / "out").exists()  # it prepares; it runs nothing
    (source / "t10k-images-idx3-ubyte.gz").unlink()
    result = run_script("--prepare", out=tmp_path / "out", **env)
    assert result.returncode == 1 and "t10k-images-idx3-ubyte" in result.stderr


def test_a_selection_naming_no_step_is_a_one_line_error(tmp_path):
    result = run_script("--dry-run", out=tmp_path, GPU_CHECK_ONLY="noise_cost,bench_trian")
    assert result.returncode == 2 and not (tmp_path / "summary.txt").exists()
    assert result.stderr.startswith("gpu_check: GPU_CHECK_ONLY names 'bench_trian', which is not a step (steps: build")


@pytest.mark.slow
def test_only_the_selected_steps_run_after_the_build(tmp_path):
    result = run_script("--dry-run", out=tmp_path, GPU_CHECK_ONLY="noise_cost")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in (tmp_path / "summary.txt").read_text().splitlines() if " exit " in line]
    ran = [line.split()[0] for line in lines if "not selected" not in line and "dry run:" not in line]
    assert ran == ["build", "noise_cost"], lines
    assert any(line.startswith("bench_train") and "not selected" in line for line in lines)
