"""What a new user met (issue 32): a short run called diverged, a folder of their own files written
over, an evaluation replaced by the next, tracebacks for bad eval options and Ctrl-C, wrong words,
and a misleading rate and progress total. Every run here is a few steps in a temporary folder."""

import json
import re
import time

import numpy as np
import pytest

from aevb_fast import cli
from aevb_fast.training import RunError, TrainConfig, data, read_metrics, train
from test_own_data import images
from test_train_cli import SMALL, one_line_error, run_cli
from testing import needs_data


@pytest.fixture
def own_npy(tmp_path):
    """240 binary 12 x 12 images, as a user's own .npy file."""
    path = tmp_path / "own.npy"
    np.save(path, images(240).squeeze(1).numpy())
    return path


def test_a_run_too_short_to_learn_exits_0_with_a_notice(tmp_path, own_npy, capsys):
    # Two steps of 100 on the user's images: the bound ends far below the start (-634 against -100,
    # the transient of a fresh model), which was "did not learn", exit 3.
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", "--dataset", str(own_npy), "--samples", "150", "--no-plots", "--out", str(out))
    records = read_metrics(out)
    assert code == 0, err
    assert records[-1]["samples_seen"] == 200 and records[-1]["test_elbo"] < records[0]["test_elbo"] - 100
    assert "did not learn" not in err and "diverged" not in err
    # Below the divergence line at its end, but too short to judge: its final state is kept, so
    # that eval and --resume work (no checkpoint was written before).
    assert (out / "checkpoint.pt").is_file()
    notice = [line for line in err.splitlines() if "too short to judge" in line]
    assert notice == [
        "aevb-fast train: 200 samples (2 steps of 100) is too short to judge this run: a fresh model's "
        "bound swings for its first 50 steps; a first result needs about 100 steps, 1e4 samples or more"
    ]


@needs_data("mnist")
@pytest.mark.slow
def test_the_readme_default_at_1e3_samples_is_not_called_diverged(tmp_path, capsys):
    # MNIST's MLP dips from -543 to -6078 at step 5 and is back at -386 by step 10: this exited 3,
    # "diverged at step 5".
    out = tmp_path / "short-run"
    code, err = run_cli(capsys, "train", "--samples", "1e3", "--no-plots", "--eval-points", "1000", "--out", str(out))
    assert code == 0, err
    assert min(r["train_elbo"] for r in read_metrics(out)) < -2000  # the dip is there
    assert "too short to judge" in err and "diverged" not in err


def test_train_refuses_a_folder_of_other_files(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    files = {"notes.txt": "my notes\n", "metrics.jsonl": '{"my": "numbers"}\n', "learning_curve.png": "my picture"}
    for name, text in files.items():
        (folder / name).write_text(text)
    code, err = run_cli(capsys, "train", *SMALL, "--samples", "100", "--out", str(folder))
    assert code == 2
    one_line_error(
        err,
        r"mine is not empty and holds no run \(it has learning_curve.png, metrics.jsonl, notes.txt\); "
        r"choose another --out, or add --overwrite to write the run into it",
    )
    assert {p.name: p.read_text() for p in folder.iterdir()} == files  # untouched
    # The Python API refuses the same, in its own words.
    with pytest.raises(RunError, match="choose another out, or pass overwrite=True to write the run into it"):
        train(
            TrainConfig(
                dataset="synthetic", latent=4, hidden=32, batch_size=50, samples=100, plots=False, out=str(folder)
            )
        )
    assert {p.name: p.read_text() for p in folder.iterdir()} == files
    # --overwrite writes the run into it; the files that are not a run's stay.
    assert cli.main(["train", *SMALL, "--samples", "100", "--out", str(folder), "--overwrite"]) == 0
    assert (folder / "notes.txt").read_text() == "my notes\n" and (folder / "checkpoint.pt").is_file()
    # An empty folder, or a run that stopped before its first checkpoint, takes a new run without asking.
    (tmp_path / "empty").mkdir()
    assert cli.main(["train", *SMALL, "--samples", "100", "--out", str(tmp_path / "empty")]) == 0
    (tmp_path / "empty" / "checkpoint.pt").unlink()
    assert cli.main(["train", *SMALL, "--samples", "100", "--out", str(tmp_path / "empty")]) == 0


def test_the_python_api_names_its_own_arguments(tmp_path):
    config = TrainConfig(
        dataset="synthetic", latent=4, hidden=32, batch_size=50, samples=100, plots=False, out=str(tmp_path / "run")
    )
    train(config)
    with pytest.raises(RunError) as error:
        train(config)
    message = str(error.value)
    assert "pass resume=True to continue it, overwrite=True to replace it, or choose another out" in message
    assert "--" not in message


@pytest.fixture
def finished_run(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", *SMALL, "--samples", "500", "--eval-every", "500", "--out", str(out)]) == 0
    return out


def test_eval_keeps_every_result(finished_run, capsys):
    assert cli.main(["eval", str(finished_run), "--importance-samples", "50", "--limit", "30"]) == 0
    assert cli.main(["eval", str(finished_run), "--importance-samples", "5", "--limit", "10", "--seed", "1"]) == 0
    err = capsys.readouterr().err
    assert f"result appended to {finished_run / 'eval.jsonl'} (2 results there" in err
    results = [json.loads(line) for line in (finished_run / "eval.jsonl").read_text().splitlines()]
    assert [(r["importance_samples"], r["limit"], r["test_points"], r["seed"]) for r in results] == [
        (50, 30, 30, 0),
        (5, 10, 10, 1),
    ]
    assert all(r["samples_seen"] == 500 and r["log_px"] >= r["test_elbo"] - 0.5 for r in results)
    assert not (finished_run / "eval.json").exists()


@pytest.mark.parametrize(
    "options,pattern",
    [
        (["--importance-samples", "0"], r"--importance-samples must be >= 1 \(K, the samples per test point"),
        (["--limit", "0"], r"--limit must be >= 1 \(leave it out to evaluate every test point\), got 0"),
        (["--batch-size", "0"], r"--batch-size must be >= 1 .*, got 0"),
        (["--batch-size", "-3"], r"--batch-size must be >= 1 .*, got -3"),
    ],
)
def test_eval_refuses_counts_below_one_in_one_line(finished_run, capsys, options, pattern):
    code, err = run_cli(capsys, "eval", str(finished_run), *options)
    assert code == 2
    one_line_error(err, pattern)
    assert not (finished_run / "eval.jsonl").exists()


def test_ctrl_c_while_train_reads_its_data_is_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "load", interrupted)
    code, err = run_cli(capsys, "train", *SMALL, "--samples", "100", "--out", str(tmp_path / "run"))
    assert code == 130
    assert err.strip() == "aevb-fast train: interrupted (Ctrl-C) before training started; no run was saved"
    assert not (tmp_path / "run").exists()


def test_lr_inf_is_called_not_finite(tmp_path, capsys):
    code, err = run_cli(capsys, "train", *SMALL, "--lr", "inf", "--out", str(tmp_path / "run"))
    assert code == 2
    one_line_error(err, r"--lr must be a finite number > 0, got inf")


def test_the_last_line_gives_the_runs_average_rate_and_the_bar_the_samples_run(tmp_path, capsys, monkeypatch):
    from aevb_fast.training.step import TrainStep

    step = TrainStep.__call__

    def slow_at_first(self):  # the first two intervals slow, the last one fast
        if self.state.step < 2:
            time.sleep(0.2)
        return step(self)

    monkeypatch.setattr(TrainStep, "__call__", slow_at_first)
    out = tmp_path / "run"
    capsys.readouterr()
    assert cli.main(["train", *SMALL, "--samples", "120", "--eval-every", "50", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert re.search(r"\| 150/150 ", captured.err), captured.err  # 3 minibatches of 50: the bar counts what runs
    last = read_metrics(out)[-1]
    average = last["samples_seen"] / last["train_wall_s"]
    assert last["samples_per_s"] > 3 * average  # the last interval's rate is not the run's
    printed = re.search(r"(\d+) samples/s on average", captured.out)
    assert printed and int(printed.group(1)) == round(average), captured.out


def test_ctrl_c_while_the_command_starts_is_one_line():
    # SIGINT half a second in: aevb_fast and torch are still loading (about 1.5 s), before any
    # of the command's code runs; the entry point (aevb_fast_command) turns it into one line.
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from aevb_fast_command import main; sys.exit(main())",
            "train",
            "--samples",
            "1e3",
            "--out",
            "never-made",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_folder_whose_checkpoint_was_moved_keeps_its_evaluations(tmp_path, capsys):
    # A finished run's folder, its checkpoint moved away: its metrics look like a run that stopped
    # before its first checkpoint, but its eval results and pictures are not such leftovers.
    folder = tmp_path / "finished"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(
        json.dumps({"samples_seen": 100, "train_elbo": -99.0, "test_elbo": -98.0}) + "\n"
    )
    (folder / "eval.jsonl").write_text(json.dumps({"log_px": -95.0, "importance_samples": 5000}) + "\n")
    code, err = run_cli(capsys, "train", *SMALL, "--samples", "100", "--out", str(folder))
    assert code == 2 and "holds no run" in err
    assert json.loads((folder / "eval.jsonl").read_text())["log_px"] == -95.0


def test_bench_refuses_sizes_below_one_in_one_line(capsys):
    for sizes in ("0", "-5", "100,0"):
        code, err = run_cli(capsys, "bench", "--ops", "gaussian_kl", "--sizes", sizes, "--device", "cpu")
        assert code == 2 and "--sizes must be at least 1" in err and "Traceback" not in err


def test_a_stop_after_the_last_step_points_to_plot_not_resume(tmp_path, capsys, monkeypatch):
    # SIGINT in the final evaluation or the pictures: the training is complete, so a resume would
    # do nothing; the pictures are what is missing.
    import signal

    import aevb_fast.training as training

    def stopped(config, **kwargs):
        raise training.TrainingStopped(signal.SIGINT, config.samples, config.out)

    monkeypatch.setattr(training, "train", stopped)
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", *SMALL, "--samples", "100", "--out", str(out))
    assert code == 130
    assert f"draw its pictures with: aevb-fast plot {out}" in err and "--resume" not in err
