"""benchmarks/gpu_check.sh keeps to its time budget and says what it skipped. The whole dry run
(every step with the GPU run's flags) is a CI step of its own (.ci/run), not a test."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


def run_script(*args, out: Path, budget: int | None = None):
    env = {**os.environ, "OUT": str(out)}
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
        "bench_ops",
        "bench_prior",
        "bench_summed",
        "noise_cost",
        "bench_head",
        "bench_train",
    ]
    assert lines[0].startswith("build") and "exit 0" in lines[0], lines[0]
    assert "skipped: 40 s budget spent" in lines[8]
    assert (tmp_path / "logs.tar").exists()


def test_an_unknown_argument_is_a_one_line_error(tmp_path):
    result = run_script("--dryrun", out=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu_check: unknown argument '--dryrun' (use --dry-run or --help)"
