"""The README's migrations of other people's VAE programs (issue 34): the pytorch/examples program
in its three variants, what its guide says changes, and the Pyro guide's prior."""

import re
from pathlib import Path

import torch

import aevb_fast as af
from testing import load_script

ROOT = Path(__file__).resolve().parents[2]


def load_vae_main():
    return load_script("examples/vae_main.py")


def test_compare_runs_three_programs_that_agree(capsys):
    vae_main = load_vae_main()
    train = torch.rand(64, 784)  # grey levels, as pytorch/examples feeds MNIST
    rows = vae_main.compare(train, [16, 32], repeats=2, min_time=0.001)
    assert [r["batch"] for r in rows] == [16, 32]
    for row in rows:
        assert set(row["timing"]) == set(vae_main.VARIANTS)
        losses = list(row["loss"].values())
        # The same weights and noise: the original's probabilities and the logits give one loss.
        for loss in losses[1:]:
            assert abs(loss - losses[0]) < 1e-4 * abs(losses[0]), row["loss"]
    vae_main.print_comparison(rows)
    out = capsys.readouterr().out
    assert re.search(r"^\| 32 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$", out, re.M), out


def test_the_migrated_program_shows_probabilities_not_logits():
    # Every place that shows the decoder's output applies the sigmoid that left the model.
    source = (ROOT / "examples" / "vae_main.py").read_text()
    assert "torch.sigmoid(model(x[:8], fused)[0])" in source  # reconstructions
    assert "torch.sigmoid(model.decode(" in source  # samples
    readme = (ROOT / "README.md").read_text()
    for place in (
        "torch.sigmoid(recon_batch)",
        "torch.sigmoid(model.decode(sample))",
        "reconstruct_img",
        "model_sample",
        "plot_vae_samples",
    ):
        assert place in readme, place


def test_readme_has_no_unmeasured_table():
    assert "VAE_MAIN_COMPARE_TABLE" not in (ROOT / "README.md").read_text()


def test_event_dims_is_required_above_two_dims_for_every_op():
    image = torch.zeros(2, 3, 4, 5)
    calls = {
        "gaussian_kl": lambda: af.gaussian_kl(image, image),
        "sample_and_kl": lambda: af.sample_and_kl(image, image),
        "bernoulli_log_prob": lambda: af.bernoulli_log_prob(image, image),
        "gaussian_log_prob": lambda: af.gaussian_log_prob(image, image, image),
    }
    for op, call in calls.items():
        try:
            call()
        except ValueError as error:
            assert re.match(rf"aevb_fast\.{op}: (x|mu) has 4 dims \(2, 3, 4, 5\); pass event_dims", str(error))
        else:
            raise AssertionError(f"{op} summed a (B, C, H, W) input over its last dim without a word")
        # reparameterize has no event: elementwise, any rank.
    assert af.reparameterize(image, image).shape == image.shape
