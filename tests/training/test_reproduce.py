"""The wake-sleep baseline and the `reproduce` command (tiny runs; the real ones are in
docs/reproduction.md)."""

import json

import pytest
import torch

from aevb_fast import cli, reproduce
from aevb_fast.models import VAE
from aevb_fast.training import TrainConfig, read_metrics, train
from aevb_fast.training.wake_sleep import WakeSleep
from testing import needs_data


def _grads(module):
    return {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_wake_trains_the_decoder_and_sleep_the_encoder(likelihood):
    torch.manual_seed(0)
    model = VAE.paper(30, 16, 3, likelihood)
    objective = WakeSleep(model)
    x = torch.rand(8, 30).bernoulli() if likelihood == "bernoulli" else torch.rand(8, 30)
    log_px, bound = objective.wake(x)
    log_px.mean().backward()
    assert all(g is None for g in _grads(model.encoder).values())
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.decoder).values())
    assert not bound.requires_grad and bound.shape == ()
    model.zero_grad(set_to_none=True)
    objective.sleep(8).mean().backward()
    assert all(g is None for g in _grads(model.decoder).values())
    assert all(g is not None for g in _grads(model.encoder).values())


def test_wake_bound_is_the_aevb_estimator():
    torch.manual_seed(0)
    model = VAE.paper(30, 16, 3)
    x = torch.rand(64, 30).bernoulli()
    torch.manual_seed(5)
    _, bound = WakeSleep(model).wake(x)
    torch.manual_seed(5)
    assert torch.allclose(bound, model(x).detach(), atol=1e-5)


def test_wake_sleep_training_improves_the_bound(tmp_path):
    config = TrainConfig(
        dataset="synthetic",
        algorithm="wake-sleep",
        latent=4,
        hidden=32,
        samples=20_000,
        eval_every=10_000,
        batch_size=100,
        out=str(tmp_path / "ws"),
        plots=False,
        lr=0.05,
    )
    summary = train(config)
    assert summary["test_elbo"] > read_metrics(tmp_path / "ws")[0]["test_elbo"] + 1


def test_wake_sleep_rejects_aevb_options():
    with pytest.raises(ValueError, match="wake-sleep takes no"):
        TrainConfig(algorithm="wake-sleep", num_samples=5).validate()
    with pytest.raises(ValueError, match="algorithm must be"):
        TrainConfig(algorithm="mcem").validate()


@needs_data("frey")
@pytest.mark.slow
def test_figure2_runs_the_grid_once_and_reports(tmp_path):
    root = tmp_path / "runs"
    args = [
        "reproduce",
        "figure2",
        "--dataset",
        "frey",
        "--latents",
        "2",
        "--samples",
        "2000",
        "--root",
        str(root),
        "--lr",
        "0.01",
    ]
    assert cli.main(args) == 0
    metrics = {a: (root / "figure2-frey" / f"{a}-j2" / "metrics.jsonl").read_text() for a in reproduce.ALGORITHMS}
    assert all(json.loads(m.splitlines()[-1])["samples_seen"] >= 2000 for m in metrics.values())
    assert (root / "figure2-frey.png").stat().st_size > 1000
    assert cli.main(args) == 0  # finished runs are not run again
    assert metrics == {
        a: (root / "figure2-frey" / f"{a}-j2" / "metrics.jsonl").read_text() for a in reproduce.ALGORITHMS
    }
    # A longer target resumes the same runs.
    assert cli.main(args[:-5] + ["3000", "--root", str(root), "--lr", "0.01"]) == 0
    last = json.loads((root / "figure2-frey" / "aevb-j2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["samples_seen"] >= 3000
    notes = tmp_path / "notes.md"
    notes.write_text("## Discussion\nhand-written\n")
    md = tmp_path / "docs" / "reproduction.md"
    assert cli.main(["reproduce", "report", "--root", str(root), "--out", str(md), "--notes", str(notes)]) == 0
    text = md.read_text()
    assert "| 2 |" in text and "figure2-frey.png" in text and "hand-written" in text
    assert (md.parent / "figure2-frey.png").is_file()


@needs_data("mnist")
@pytest.mark.slow
def test_figure3_estimates_and_settle_check(tmp_path):
    root = tmp_path / "runs"
    png = reproduce.figure3(2000, root, importance_samples=20, points=30, settle_ks=(1, 10, 50))
    assert png.stat().st_size > 1000
    for algorithm in reproduce.ALGORITHMS:
        rows = [
            json.loads(r)
            for r in (root / "figure3-mnist" / algorithm / "marginal_likelihood.jsonl").read_text().splitlines()
        ]
        assert rows and all(r["test_log_px"] < 0 for r in rows)
        settle = json.loads((root / "figure3-mnist" / algorithm / "settle.json").read_text())
        by_k = settle["test_log_px_by_K"]
        assert by_k["50"] >= by_k["1"] - 1  # more samples: a tighter (higher) estimate, up to noise


def test_a_log_without_checkpoint_is_not_silently_restarted(tmp_path):
    out = reproduce.run_dir(tmp_path, "frey", "aevb", 2)
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text(json.dumps({"samples_seen": 500, "train_elbo": 1.0, "test_elbo": 1.0}) + "\n")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        reproduce._train_to(out, 1000, dataset="frey")


def test_a_moved_root_resumes_its_runs_where_they_are(tmp_path):
    # The stored run directory was resumed: a copied root grew the original, a moved one failed.
    first, moved = tmp_path / "first" / "run", tmp_path / "moved" / "run"
    small = dict(dataset="synthetic", latent=2, hidden=16, batch_size=50, eval_every=100)
    reproduce._train_to(first, 100, **small)
    first.parent.rename(moved.parent)
    reproduce._train_to(moved, 200, **small)
    assert [r["samples_seen"] for r in read_metrics(moved)] == [0, 100, 200] and not first.parent.exists()


def test_report_without_runs_is_refused_and_keeps_the_old_report(tmp_path, capsys):
    # A mistyped --root: one line, exit 2, and the report there is not replaced by an empty one.
    md = tmp_path / "reproduction.md"
    md.write_text("the old report\n")
    code = cli.main(["reproduce", "report", "--root", str(tmp_path / "no-such-runs"), "--out", str(md)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no runs under" in err and "\n" not in err, err
    assert md.read_text() == "the old report\n"


def test_reproduce_stopped_by_sigterm_exits_143_and_says_what_was_kept(tmp_path, capsys, monkeypatch):
    # TrainingStopped is a KeyboardInterrupt: the command's Ctrl-C handler said "interrupted
    # (Ctrl-C)" and exited 130 after a SIGTERM.
    import signal

    from aevb_fast.training import TrainingStopped

    def stopped(*args, **kwargs):
        raise TrainingStopped(signal.SIGTERM, 500, str(tmp_path / "run"), saved_at=500)

    monkeypatch.setattr(reproduce, "figure2", stopped)
    assert cli.main(["reproduce", "figure2", "--dataset", "frey", "--root", str(tmp_path), "--threads", "1"]) == 143
    err = capsys.readouterr().err
    assert f"stopped by SIGTERM at 500 samples; checkpoint saved in {tmp_path / 'run'}" in err and "Ctrl-C" not in err
