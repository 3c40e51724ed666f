"""`aevb-fast train/eval/plot` as a new user meets them: a finished run is never overwritten by
accident, every user error is one line with a non-zero exit, resuming checks its options, a signal
exits 130/143 and says how to resume, help shows every default, and nothing is left in temporary
folders."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from aevb_fast import cli
from aevb_fast.training import TrainConfig, read_metrics

# One thread: the runs are tiny, and a thread count of its own keeps the command from probing the
# machine (on a busy one it would add a line saying so to the output the tests read).
SMALL = [
    "--dataset",
    "synthetic",
    "--latent",
    "4",
    "--hidden",
    "32",
    "--batch-size",
    "50",
    "--no-plots",
    "--threads",
    "1",
]


def run_cli(capsys, *argv) -> tuple[int, str]:
    """(exit code, stderr) of one command alone."""
    capsys.readouterr()
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def one_line_error(err: str, pattern: str) -> None:
    notices = ("aevb_fast.data: reading", "this CPU is busy")  # the data file read; a busy machine's threads
    lines = [
        line for line in err.strip().splitlines() if not any(n in line for n in notices) and "%|" not in line
    ]  # not the progress bar
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


def test_a_finished_run_is_not_overwritten(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["train", *SMALL, "--samples", "1000", "--eval-every", "500", "--out", out]) == 0
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes(), (tmp_path / "run" / "metrics.jsonl").read_text()
    code, err = run_cli(capsys, "train", *SMALL, "--samples", "2000", "--out", out)
    assert code == 2
    one_line_error(err, "already holds a run; add --resume to continue it, --overwrite to replace it")
    assert (
        (tmp_path / "run" / "checkpoint.pt").read_bytes(),
        (tmp_path / "run" / "metrics.jsonl").read_text(),
    ) == before
    # --overwrite replaces it: one step-0 line, not two.
    assert cli.main(["train", *SMALL, "--samples", "500", "--eval-every", "500", "--out", out, "--overwrite"]) == 0
    assert [r["samples_seen"] for r in read_metrics(out)] == [0, 500]


def test_default_run_names_differ_by_length_and_options(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *SMALL, "--samples", "500", "--eval-every", "500"]) == 0
    assert cli.main(["train", *SMALL, "--samples", "1e3", "--eval-every", "500"]) == 0
    assert (
        cli.main(
            [
                "train",
                *SMALL,
                "--samples",
                "500",
                "--eval-every",
                "500",
                "--optimizer",
                "adam",
                "--lr",
                "0.001",
                "--lr-decay",
                "wsd",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "synthetic-j4-h32-b50-n1e3-s0",
        "synthetic-j4-h32-b50-n500-s0",
        "synthetic-j4-h32-b50-n500-s0-adam-lr0.001-wsd",
    ]
    # --samples is processed in whole minibatches, and says so when it rounds up.
    code, err = run_cli(capsys, "train", *SMALL, "--samples", "520", "--eval-every", "500")
    assert code == 0 and "--samples 520 is 11 minibatches of 50: 550 samples will be processed" in err


def test_user_errors_are_one_line(tmp_path, capsys):
    missing = str(tmp_path / "nonexistent")
    for argv, pattern in [
        (["train", "--resume"], "--resume: no run at runs/.* name the run to continue with --out"),
        (["train", "--resume", "--out", missing], "nonexistent holds no checkpoint"),
        (["eval", missing], "nonexistent is neither a run directory nor a checkpoint file .it does not exist."),
        (["plot", missing], "nonexistent is neither a run directory nor a checkpoint file"),
        (["eval", str(tmp_path)], "holds no checkpoint"),
        (["plot", str(tmp_path)], "holds no metrics.jsonl"),
        (
            [
                "train",
                "--dataset",
                "mnist",
                "--data-dir",
                str(tmp_path),
                "--samples",
                "1e3",
                "--test-fraction",
                "2",
                "--out",
                missing,
            ],
            "test_fraction must be between 0 and 1",
        ),
        (["train", *SMALL, "--resume", "--overwrite", "--out", missing], "give one of them"),
        (
            ["train", "--dataset", str(tmp_path), "--out", missing],
            "is a directory; give the .npy/.npz/.pt file inside it",
        ),
        (["train", *SMALL, "--lr", "inf", "--out", missing], "--lr must be a finite number > 0, got inf"),
        (
            ["train", *SMALL, "--samples", "0", "--out", missing],
            "--samples .training examples to process. must be >= 1, got 0",
        ),
        (["train", *SMALL, "--batch-size", "0", "--out", missing], "--batch-size must be >= 1, got 0"),
    ] + (
        []
        if torch.cuda.is_available()
        else [
            (
                ["train", *SMALL, "--device", "cuda", "--out", missing],
                "--device cuda, but torch .* sees no CUDA device; use --device cpu",
            ),
            (["eval", missing, "--device", "cuda"], "--device cuda, but torch .* sees no CUDA device"),
        ]
    ):
        code, err = run_cli(capsys, *argv)
        assert code == 2, argv
        one_line_error(err, pattern)


def test_resume_refuses_conflicting_options_and_says_what_changes(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["train", *SMALL, "--samples", "500", "--eval-every", "500", "--out", out]) == 0
    code, err = run_cli(capsys, "train", "--resume", "--out", out, "--lr", "0.5", "--latent", "5")
    assert code == 2
    one_line_error(err, "--latent 5 .the run has 4., --lr 0.5 .the run has 0.02.: a resumed run keeps its options")
    assert "--no-plots, --eval-every, --no-fused-head, --data-dir, --no-cuda-graph may change" in err  # real flags
    code, err = run_cli(capsys, "train", "--resume", "--out", out)
    assert code == 0 and "is finished (500 of 500 samples)" in err
    code, err = run_cli(capsys, "train", "--resume", "--out", out, "--samples", "1000", "--data-dir", str(tmp_path))
    assert code == 0 and "samples changed from 500 to 1000" in err
    assert f"data_dir changed from None to {tmp_path}" in err  # the files moved: allowed, and said
    assert [r["samples_seen"] for r in read_metrics(out)] == [0, 500, 1000]
    code, err = run_cli(capsys, "train", "--resume", "--out", out, "--test-data", str(tmp_path / "t.npy"))
    assert code == 2
    one_line_error(err, "--test-data .*t.npy .the run was started without it.")


def test_resume_continues_the_run_named_by_out_when_it_was_copied_or_moved(tmp_path, capsys):
    # A copy was resumed in the folder the checkpoint was first written to (the original grew, the
    # copy stayed as it was, exit 0); a moved run was "no checkpoint" at its old path.
    first, copy, moved = tmp_path / "first", tmp_path / "copy", tmp_path / "moved"
    assert cli.main(["train", *SMALL, "--samples", "500", "--eval-every", "500", "--out", str(first)]) == 0
    shutil.copytree(first, copy)
    before = (first / "metrics.jsonl").read_bytes(), (first / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert cli.main(["train", "--resume", "--out", str(copy), "--samples", "1000"]) == 0
    assert f"run in {copy}" in capsys.readouterr().out
    assert [r["samples_seen"] for r in read_metrics(copy)] == [0, 500, 1000]
    assert ((first / "metrics.jsonl").read_bytes(), (first / "checkpoint.pt").read_bytes()) == before
    first.rename(moved)
    assert cli.main(["train", "--resume", "--out", str(moved), "--samples", "1000"]) == 0
    assert [r["samples_seen"] for r in read_metrics(moved)] == [0, 500, 1000]
    assert not first.exists()


def test_resume_with_another_process_count_gives_the_command_that_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *SMALL, "--samples", "500", "--eval-every", "500", "--out", str(out)]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    state["world"] = 2  # as if torchrun had run it with 2 processes
    torch.save(state, out / "checkpoint.pt")
    code, err = run_cli(capsys, "train", "--resume", "--out", str(out), "--samples", "1000")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"aevb-fast train: the run in {out} ran as 2 processes (torchrun) and is resumed as 1; resume it with as "
        f"many, as it ran (each process has its own random streams; from the command line: torchrun "
        f"--nproc-per-node 2 -m aevb_fast.cli train --resume --out {out})"
    )


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.slow
def test_a_signal_exits_130_or_143_and_says_how_to_resume(tmp_path, signum, code):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aevb_fast.cli",
            "train",
            *SMALL,
            "--samples",
            "1e7",
            "--eval-every",
            "1000",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:  # training, past one evaluation
        time.sleep(0.2)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr[-2000:]
    assert f"resume with: aevb-fast train --resume --out {out}" in stderr
    assert "ELBO" not in stdout  # no final figures printed as if the run had finished
    assert len(read_metrics(out)) >= 2


def test_help_shows_every_default_and_the_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    options = re.split(r"\n  (?=-)", text.split("options:", 1)[1])[1:]
    missing = [o.split()[0] for o in options if "(default:" not in " ".join(o.split()) and not o.startswith("-h")]
    assert not missing, missing
    assert "training examples" in text and "draws of z" in text
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert re.match(r"aevb-fast \d+\.\d+", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_help_shows_the_recipe_that_runs(capsys):
    # The defaults shown are the ones resolved() applies (the help once showed an old recipe).
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    paper, large = TrainConfig(batch_size=100).resolved(), TrainConfig(batch_size=4096).resolved()
    for shown in (
        f"(default: {paper.lr:g} (Adagrad); Adam: {large.lr:g} x",
        f"{large.warmup} warm-up steps",
        f"(default: 0, or {large.warmup} for the large-batch recipe)",
        f"(default: {large.final_lr:g} of the peak with a decay)",
        f"(default: 0 (off), or {large.clip_grad_norm:g} for the large-batch recipe)",
    ):
        assert shown in text, shown


def test_divergence_exits_non_zero(tmp_path, capsys):
    # Adagrad at lr 1.0 on synthetic data blows up: exit 3, the message says no checkpoint exists yet.
    code, err = run_cli(
        capsys,
        "train",
        *SMALL,
        "--optimizer",
        "adagrad",
        "--lr",
        "30",
        "--samples",
        "2e4",
        "--eval-every",
        "1e4",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 3
    one_line_error(err, "diverged at step .*no checkpoint was written yet. Try a lower --lr")
    # A run that never wrote a checkpoint is not one to protect: the rerun the message suggests
    # runs in the same directory without --overwrite.
    code, err = run_cli(
        capsys,
        "train",
        *SMALL,
        "--optimizer",
        "adagrad",
        "--lr",
        "0.02",
        "--samples",
        "1000",
        "--eval-every",
        "500",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 0, err
    assert [r["samples_seen"] for r in read_metrics(str(tmp_path / "run"))] == [0, 500, 1000]


def test_the_resume_command_follows_the_processes_that_ran(monkeypatch):
    from aevb_fast.training.options import resume_command

    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert resume_command("runs/a") == "aevb-fast train --resume --out runs/a"
    assert resume_command("runs/a", threads=2) == "aevb-fast train --resume --out runs/a --threads 2"
    assert resume_command("runs/a", 4) == "torchrun --nproc-per-node 4 -m aevb_fast.cli train --resume --out runs/a"
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # two machines of 4: their rendezvous options are the user's
    assert resume_command("runs/a") == (
        "torchrun --nnodes 2 --nproc-per-node 4 ... -m aevb_fast.cli train --resume --out runs/a"
    )


def test_grey_levels_under_a_bernoulli_are_not_called_nats(tmp_path, capsys):
    """A Bernoulli likelihood of grey levels reports minus cross-entropies: train's summary and
    eval say so instead of calling them nats; binary data's summary says nats."""
    import numpy as np

    rng = np.random.default_rng(0)
    for name, points in [("grey", rng.random((300, 16))), ("binary", (rng.random((300, 16)) > 0.5) * 1.0)]:
        np.save(tmp_path / f"{name}.npy", points.astype(np.float32))
        out = str(tmp_path / name)
        argv = [*SMALL[2:], "--dataset", str(tmp_path / f"{name}.npy"), "--likelihood", "bernoulli"]
        capsys.readouterr()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as -W ignore: the summary does not depend on the warning
            assert cli.main(["train", *argv, "--samples", "200", "--eval-every", "100", "--out", out]) == 0
        summary = capsys.readouterr().out.strip().splitlines()[-1]
        grey = name == "grey"
        assert ("(minus cross-entropies, not nats)" in summary) == grey and (" nats," in summary) != grey, summary
        code, err = run_cli(capsys, "eval", out, "--importance-samples", "2", "--limit", "10")
        assert code == 0 and ("minus cross-entropies of grey levels, not nats" in err) == grey, err


def test_a_stop_says_what_was_kept_not_a_checkpoint_it_did_not_write(tmp_path, capsys, monkeypatch):
    # A model below the divergence line at the stop is not saved: the message says so, and gives
    # no resume command where no checkpoint exists (it would fail with "holds no checkpoint").
    from aevb_fast.training import TrainingStopped

    out = str(tmp_path / "run")
    for saved_at, said, then in [
        (500, f"checkpoint saved in {out}", "resume with:"),
        (200, "not saved (the model is below the divergence line); the last good checkpoint, at 200", "resume with:"),
        (None, "no checkpoint was written", "nothing to resume: start again with the same command and --overwrite"),
    ]:

        def stopped(*args, saved_at=saved_at, **kwargs):
            raise TrainingStopped(signal.SIGINT, 500, out, saved_at)

        monkeypatch.setattr("aevb_fast.training.train", stopped)  # what the command imports
        assert cli.main(["train", *SMALL, "--samples", "1000", "--out", out]) == 130
        err = capsys.readouterr().err
        assert said in err and then in err, err
