import json
import subprocess
import sys

import pytest
import torch

import aevb_fast as af
from aevb_fast import cli
from aevb_fast.bench import op_suite as bench
from testing import load_script


def test_info_prints_build_info(capsys):
    assert cli.main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "cpu_isa" in info and "torch" in info


def test_bench_small_run(tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    code = cli.main(
        [
            "bench",
            "--ops",
            "sample_and_kl,bernoulli_log_prob",
            "--sizes",
            "64",
            "--data",
            "50",
            "--latent",
            "8",
            "--samples",
            "1,3",
            "--dtype",
            "float32,bfloat16",
            "--device",
            "cpu",
            "--fresh-pages",
            "--repeats",
            "3",
            "--min-time",
            "0.001",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "sample_and_kl" in printed and "vs compiled" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # L applies to the sampling ops only; every dtype in one run.
    assert sorted((r["op"], r["samples"], r["dtype"]) for r in rows) == [
        ("bernoulli_log_prob", 1, "bfloat16"),
        ("bernoulli_log_prob", 1, "float32"),
        ("sample_and_kl", 1, "bfloat16"),
        ("sample_and_kl", 1, "float32"),
        ("sample_and_kl", 3, "bfloat16"),
        ("sample_and_kl", 3, "float32"),
    ]
    for r in rows:
        assert set(r["timing"]) == set(bench.PROVIDERS)
        assert r["speedup_vs_eager"] > 0 and r["torch"] and r["date"] and r["threads"] >= 1
        assert r["cpu_allocator"] == "glibc default"
        t = r["timing"]["aevb_fast"]
        assert t["p20_s"] <= t["median_s"] <= t["p80_s"]
        # The copy is timed before each case: each row's share is of its own copy.
        assert r["copy_gbps"] > 0 and r["bandwidth_share"] == pytest.approx(r["gbps"] / r["copy_gbps"])
    assert "copy bandwidth, timed before each case" in printed


def test_bytes_moved_counts_every_sample():
    n = 10 * 8 * 4  # B x J float32
    assert bench.bytes_moved("reparameterize", 10, 8, 4, 4, samples=1) == (3 * n, 4 * n)
    assert bench.bytes_moved("reparameterize", 10, 8, 4, 4, samples=5) == (7 * n, 8 * n)


def test_keep_freed_memory_applies_on_glibc():
    code = "from aevb_fast.bench import op_suite; print(op_suite.keep_freed_memory())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "True"


def test_bench_modes_and_memory(tmp_path):
    out = tmp_path / "rows.jsonl"
    assert (
        cli.main(
            [
                "bench",
                "--ops",
                "gaussian_log_prob",
                "--sizes",
                "64",
                "--data",
                "40",
                "--modes",
                "forward,backward",
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--fresh-pages",
                "--repeats",
                "2",
                "--min-time",
                "0.001",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["forward", "backward"]
    # The fused op saves only its inputs (x, mean, logvar); eager saves intermediates instead.
    memory = rows[0]["memory"]
    assert memory["aevb_fast"]["saved_bytes"] == 3 * 64 * 40 * 4
    assert memory["eager"]["saved_bytes"] > 0
    assert cli.main(["bench", "--modes", "sideways"]) == 2


def test_bench_rejects_unknown_op(capsys):
    assert cli.main(["bench", "--ops", "nope"]) == 2
    assert "unknown --ops" in capsys.readouterr().err


def test_bench_rejects_sizes_that_are_not_integers(capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        cli.main(["bench", "--sizes", "abc"])
    assert exit_info.value.code == 2
    assert "--sizes: expected comma-separated integers (4096,65536), got 'abc'" in capsys.readouterr().err


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "aevb_fast.cli", "info"], capture_output=True, text=True)
    assert result.returncode == 0 and "cpu_isa" in result.stdout


def test_a_wrong_kernel_gets_no_time():
    case = bench.make_case("gaussian_kl", 32, 10, 8, torch.float32, "cpu")
    assert case.samples == 1
    steps = bench.providers_for("gaussian_kl")
    steps["aevb_fast"] = bench._forward_backward(lambda mu, logvar: 1.5 * af.gaussian_kl(mu, logvar))
    with pytest.raises(RuntimeError, match="wrong results"):
        bench.bench_case(case, steps, repeats=2, min_time=0.001)


@pytest.mark.slow
def test_benchmark_plot(tmp_path):

    out = tmp_path / "somecpu" / "ops.jsonl"
    assert (
        cli.main(
            [
                "bench",
                "--ops",
                "gaussian_kl",
                "--sizes",
                "16,32",
                "--latent",
                "4",
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--fresh-pages",
                "--repeats",
                "2",
                "--min-time",
                "0.001",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "bench",
                "--train",
                "--no-memory",
                "--sizes",
                "8,16",
                "--hidden",
                "16",
                "--train-latent",
                "2",
                "--device",
                "cpu",
                "--repeats",
                "2",
                "--out",
                str(out.with_name("train.jsonl")),
            ]
        )
        == 0
    )
    plot = load_script("benchmarks/plot.py", "bench_plot")
    assert plot.main([str(tmp_path)]) == 0
    for name in ("speedup_float32.png", "bandwidth_float32.png", "train_step.png"):
        assert (tmp_path / "somecpu" / name).stat().st_size > 1000
    assert {json.loads(line)["repeats"] for line in out.with_name("train.jsonl").read_text().splitlines()} == {2}
    tables = plot.markdown_tables(tmp_path)
    assert "| batch | fused | fused-head | reference |" in tables and "\n| 8 | " in tables and "\n| 16 | " in tables


@pytest.mark.slow
def test_pytest_benchmark_suite_runs():
    # The pytest-benchmark file collects and its smallest CPU cases pass (timing disabled).
    from pathlib import Path

    pytest.importorskip("pytest_benchmark")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks/",
            "--benchmark-disable",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "cpu-batch100 and float32 and not compiled and (gaussian_kl or sample_and_kl-L5)",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout or "4 passed" in result.stdout


def test_a_wrong_sample_gets_no_time():
    case = bench.make_case("reparameterize", 64, 10, 8, torch.float32, "cpu")
    steps = bench.providers_for("reparameterize")
    steps["aevb_fast"] = bench._forward_backward(
        lambda mu, logvar: af.reparameterize(mu, 2 * logvar.abs() + 1, num_samples=1)
    )
    with pytest.raises(RuntimeError, match="wrong results"):
        bench.bench_case(case, steps, repeats=2, min_time=0.001)


@pytest.mark.slow
def test_bench_head(tmp_path, capsys):
    out = tmp_path / "head.jsonl"
    assert (
        cli.main(
            [
                "bench",
                "--head",
                "--sizes",
                "2048",
                "-L",
                "2",
                "--hidden",
                "32",
                "--repeats",
                "2",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert set(row["timing"]) == set(row["peak_bytes"]) == {"eager", "compiled", "fused-none", "fused-sum"}
    assert row["repeats"] == 2  # a key field: a quicker run sits beside this one, not over it
    # eager holds the logits and their gradient (2 x 2 x 2048 x 784 x 4 bytes), the fused head h's
    # gradient and two chunks, less than the logits alone. The CPU figure is sampled: a sample can
    # land while the gradient's pages are still being written (CI once read 0.9 of the two), so the
    # bound on eager asks for 1.5 x the logits.
    logits = 2 * 2048 * 784 * 4
    assert row["peak_bytes"]["eager"] > 1.5 * logits, row["peak_bytes"]
    assert row["peak_bytes"]["fused-sum"] < logits, row["peak_bytes"]
    assert "fused-sum" in capsys.readouterr().out
    assert cli.main(["bench", "--head", "--train"]) == 2


def test_bench_saves_each_row_as_it_is_measured(tmp_path, monkeypatch, capsys):
    """A run cut short (a timeout on a lent GPU, Ctrl-C) keeps the rows measured before it, in
    the file and on the screen."""
    out = tmp_path / "rows.jsonl"
    real, calls = bench.bench_case, []

    def second_case_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "bench_case", second_case_interrupted)
    assert (
        cli.main(
            [
                "bench",
                "--ops",
                "gaussian_kl",
                "--sizes",
                "32,64",
                "--latent",
                "8",
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--fresh-pages",
                "--repeats",
                "1",
                "--min-time",
                "0.001",
                "--out",
                str(out),
            ]
        )
        == 130
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["op"], r["batch"]) for r in rows] == [("gaussian_kl", 32)]
    # The screen keeps them too: the table of the rows measured before Ctrl-C.
    shown = capsys.readouterr().out
    assert bench.format_table(rows) in shown
    assert "(interrupted: the 1 rows measured before Ctrl-C)" in shown


def test_bench_refuses_a_corrupt_results_file_before_timing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "rows.jsonl"
    out.write_text("not json\n")
    monkeypatch.setattr(bench, "bench_case", lambda *a, **k: pytest.fail("timed before checking the file"))
    assert cli.main(["bench", "--ops", "gaussian_kl", "--sizes", "32", "--device", "cpu", "--out", str(out)]) == 2
    assert "rows.jsonl:1: not a results row" in capsys.readouterr().err
    assert out.read_text() == "not json\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--ops", "gaussian_kl", "--sizes", "32", "--device", "cpu"],
        ["bench", "--train", "--sizes", "32", "--device", "cpu"],
    ],
)
def test_ctrl_c_in_bench_is_one_line_and_exit_130(argv, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run", interrupted)
    from aevb_fast.bench import train_step

    monkeypatch.setattr(train_step, "run", interrupted)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err == "aevb-fast bench: interrupted (Ctrl-C)"


def test_matmul_is_an_option_of_the_training_step_bench(capsys):
    # An option that would be ignored is refused in one line.
    assert cli.main(["bench", "--matmul", "tf32", "--sizes", "8"]) == 2
    assert "--matmul is an option of --train" in capsys.readouterr().err
    assert cli.main(["bench", "--train", "--matmul", "tf32", "--device", "cpu", "--sizes", "8"]) == 2
    assert "--matmul tf32 is for CUDA devices" in capsys.readouterr().err


def test_tf32_rows_are_labelled_and_keyed_apart():
    from aevb_fast.bench.harness import row_key

    row = {"suite": "train_step", "batch": 4096, "dtype": "float32"}
    assert row_key(row) != row_key({**row, "matmul": "tf32"})


def test_bench_refuses_bad_device_threads_and_an_unwritable_file_before_timing(tmp_path, capsys):
    for argv, message in [
        (["--device", "gpu"], "--device must be cpu, cuda or all, got 'gpu'"),
        (["--threads", "-1"], "--threads must be at least 1 (or 0: torch's default), got -1"),
    ]:
        assert cli.main(["bench", "--ops", "gaussian_kl", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = cli.main(["bench", "--ops", "gaussian_kl", "--sizes", "8", "--out", str(blocker / "ops.jsonl")])
    captured = capsys.readouterr()
    assert code == 2 and "cannot write the results into" in captured.err and "aevb_fast" not in captured.out


def test_saved_rows_keep_their_repeats_beside_each_other_and_the_plot_takes_the_most(tmp_path):
    # A quick --repeats 1 run sits beside a median of 3 (the key holds the repeats) and does not
    # stand for it in the plots and tables, which also take one thread count.
    plot = load_script("benchmarks/plot.py", "bench_plot_repeats")
    out = tmp_path / "ops.jsonl"
    base = ["bench", "--ops", "gaussian_kl", "--sizes", "16", "--latent", "4", "--device", "cpu"]
    for repeats in ("3", "1"):
        argv = [*base, "--dtype", "float32", "--fresh-pages", "--min-time", "0.001", "--out", str(out)]
        assert cli.main([*argv, "--repeats", repeats, "--threads", "1"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["repeats"] for r in rows) == [1, 3]
    (chosen,) = plot.latest_runs(out)["float32"]
    assert chosen["repeats"] == 3


def test_a_row_saved_twice_in_one_run_is_counted_once(tmp_path):
    # The head suite saves its row, then again with the profile: one row added, none replaced.
    saver = cli._RowSaver(tmp_path / "head.jsonl")
    row = {"suite": "head", "batch": 8, "samples": 1, "device": "cpu", "threads": 1}
    saver(row)
    saver({**row, "profile": {}})
    assert (saver.added, saver.replaced) == (1, 0)
    assert len((tmp_path / "head.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train", "--dtype", "bfloat16"], "--train does not take --dtype"),
        (["--train", "--min-time", "1", "--ops", "gaussian_kl"], "--train does not take --ops, --min-time"),
        (["--head", "--modes", "forward", "--latent", "8"], "--head does not take --latent, --modes"),
        (["--no-memory", "--hidden", "50"], "the op suite does not take --hidden, --no-memory"),
    ],
)
def test_an_option_the_suite_does_not_read_is_refused(capsys, argv, message):
    # Not ignored: --train's dtype is float32 whatever --dtype says, --head's time per round fixed.
    assert cli.main(["bench", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"aevb-fast bench: {message}"
