import json
import subprocess
import sys

from aevb_fast import bench, cli


def test_info_prints_build_info(capsys):
    assert cli.main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "cpu_isa" in info and "torch" in info


def test_bench_small_run(tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    code = cli.main(["bench", "--ops", "gaussian_kl,bernoulli_log_prob", "--sizes", "64",
                     "--data", "50", "--latent", "8", "--repeats", "3", "--min-time", "0.001",
                     "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "gaussian_kl" in printed and "vs compiled" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["op"] for r in rows} == {"gaussian_kl", "bernoulli_log_prob"}
    for r in rows:
        assert set(r["timing"]) == set(bench.PROVIDERS)
        assert r["speedup_vs_eager"] > 0 and r["torch"] and r["date"]


def test_bench_modes_and_memory(tmp_path):
    out = tmp_path / "rows.jsonl"
    assert cli.main(["bench", "--ops", "gaussian_log_prob", "--sizes", "64", "--data", "40",
                     "--modes", "forward,backward", "--repeats", "2", "--min-time", "0.001",
                     "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["forward", "backward"]
    # The fused op saves only its inputs (x, mean, logvar); eager saves intermediates instead.
    memory = rows[0]["memory"]
    assert memory["aevb_fast"]["saved_bytes"] == 3 * 64 * 40 * 4
    assert memory["eager"]["saved_bytes"] > 0
    assert cli.main(["bench", "--modes", "sideways"]) == 2


def test_bench_rejects_unknown_op(capsys):
    assert cli.main(["bench", "--ops", "nope"]) == 2
    assert "unknown op" in capsys.readouterr().err


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "aevb_fast.cli", "info"], capture_output=True, text=True)
    assert result.returncode == 0 and "cpu_isa" in result.stdout


def test_a_wrong_kernel_gets_no_time():
    import pytest
    import torch

    import aevb_fast as af

    case = bench.make_case("gaussian_kl", 32, 10, 8, torch.float32, "cpu")
    steps = bench.providers_for("gaussian_kl")
    steps["aevb_fast"] = bench._forward_backward(lambda mu, logvar: 1.5 * af.gaussian_kl(mu, logvar))
    with pytest.raises(RuntimeError, match="wrong results"):
        bench.bench_case(case, steps, repeats=2, min_time=0.001)


def test_benchmark_plot(tmp_path):
    import importlib.util
    from pathlib import Path

    out = tmp_path / "somecpu" / "ops.jsonl"
    assert cli.main(["bench", "--ops", "gaussian_kl", "--sizes", "16,32", "--latent", "4",
                     "--repeats", "2", "--min-time", "0.001", "--out", str(out)]) == 0
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "plot.py"
    spec = importlib.util.spec_from_file_location("bench_plot", script)
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    assert plot.main([str(tmp_path)]) == 0
    assert (tmp_path / "somecpu" / "speedup_float32.png").stat().st_size > 1000
