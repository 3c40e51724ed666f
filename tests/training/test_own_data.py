"""The user's own data and model: tensors, numpy arrays and files, Datasets, image-shaped events with
a convolutional VAE, through Python and the command line; and what eval and plot do with such runs."""

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from aevb_fast import cli
from aevb_fast.training import TrainConfig, data, load_checkpoint, read_metrics, train


def images(n=300, seed=0) -> torch.Tensor:
    """Binary 1 x 12 x 12 images with structure to learn: a bright square at one of four places."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 12, 12)
    corner = torch.randint(0, 4, (n,), generator=g)
    for i, c in enumerate(corner.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, 6 * r : 6 * r + 6, 6 * s : 6 * s + 6] = 1
    return torch.bernoulli(0.1 + 0.8 * x, generator=g)


class ConvVAE(nn.Module):
    def __init__(self, latent=3):
        super().__init__()
        self.encoder = ConvEncoder(latent)
        self.decoder = ConvDecoder(latent)


class ConvEncoder(nn.Module):
    def __init__(self, latent):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 2 * latent)
        )

    def forward(self, x):
        return self.net(x).chunk(2, dim=-1)


class ConvDecoder(nn.Module):
    def __init__(self, latent):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent, 8 * 6 * 6),
            nn.ReLU(),
            nn.Unflatten(1, (8, 6, 6)),
            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),
        )

    def forward(self, z):
        return self.net(z)  # logits of shape (B, 1, 12, 12)


class Affine(nn.Module):
    def __init__(self, scale, shift):
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x):
        return self.scale * x + self.shift


def config(tmp_path, **overrides) -> TrainConfig:
    options = dict(
        batch_size=50,
        samples=3000,
        eval_every=1500,
        eval_points=200,
        out=str(tmp_path / "run"),
        plots=False,
        latent=3,
        hidden=32,
    )
    options.update(overrides)
    return TrainConfig(**options)


def test_conv_model_on_image_tensors(tmp_path):
    torch.manual_seed(0)
    summary = train(config(tmp_path, plots=True), model=ConvVAE(), train_data=images(300), test_data=images(60, seed=1))
    logged = read_metrics(tmp_path / "run")
    assert summary == {**logged[-1], "bounds_in_nats": True} and summary["samples_seen"] == 3000
    assert summary["test_elbo"] > logged[0]["test_elbo"] + 10  # it learned
    assert (tmp_path / "run" / "reconstructions.png").stat().st_size > 1000  # (1, 12, 12) drawn as images


def test_numpy_arrays_and_a_held_out_split(tmp_path):
    x = images(200).numpy()
    summary = train(config(tmp_path, test_fraction=0.25), train_data=x)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["data_spec"]["event_shape"] == [1, 12, 12] and state["data_spec"]["source"] == "python"
    assert np.isfinite(summary["test_elbo"])


def test_a_dataset_of_image_label_pairs(tmp_path):
    x = images(200)
    dataset = torch.utils.data.TensorDataset(x, torch.zeros(200))
    train(config(tmp_path, samples=500), model=ConvVAE(), train_data=dataset)
    assert read_metrics(tmp_path / "run")[-1]["samples_seen"] == 500


def test_the_likelihood_follows_the_decoder(tmp_path):
    # A Gaussian decoder (mean, logvar) on real-valued data: inferred; asking for Bernoulli is an error.
    class GaussianHead(nn.Module):
        def forward(self, z):
            return torch.sigmoid(self.mean(z)), self.logvar(z)

    torch.manual_seed(0)
    model = ConvVAE()
    head = GaussianHead()
    head.mean, head.logvar = nn.Linear(3, 144), nn.Linear(3, 144)
    model.decoder = head
    x = torch.rand(100, 1, 12, 12)
    train(config(tmp_path, samples=200), model=model, train_data=x)
    with pytest.raises(ValueError, match="likelihood 'bernoulli' was asked for.*gaussian"):
        train(config(tmp_path, samples=200, likelihood="bernoulli", out=str(tmp_path / "b")), model=model, train_data=x)

    # One learned log-variance for every pixel (a fixed-variance VAE's): trained and evaluated.
    class SharedVariance(nn.Module):
        def __init__(self):
            super().__init__()
            self.mean, self.logvar = nn.Linear(3, 144), nn.Parameter(torch.zeros(()))

        def forward(self, z):
            return torch.sigmoid(self.mean(z)).reshape(-1, 1, 12, 12), self.logvar

    model.decoder = SharedVariance()
    summary = train(config(tmp_path, samples=200, out=str(tmp_path / "shared")), model=model, train_data=x)
    assert np.isfinite(summary["test_elbo"]) and model.decoder.logvar.item() != 0.0


def test_bad_data_and_models_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Bernoulli likelihood needs values in \\[0, 1\\].*divide 8-bit pixels by 255"):
        train(config(tmp_path, likelihood="bernoulli"), train_data=torch.randint(0, 256, (50, 16)).float())
    with pytest.raises(ValueError, match="paper's Gaussian decoder .the likelihood of data that is not binary"):
        train(config(tmp_path), train_data=torch.randn(50, 16))
    # A model of one's own takes its likelihood from its decoder: no --likelihood in the advice.
    with pytest.raises(ValueError, match=r"points of 'data' .*255\), or give the model a decoder that returns \(mean"):
        train(config(tmp_path), model=ConvVAE(), train_data=255 * images(50))
    # A decoder ending in a sigmoid trained as logits ends near -D log 2 and looked like a result.
    probabilities = ConvVAE()
    probabilities.decoder.net.append(nn.Sigmoid())
    with pytest.raises(ValueError, match=r"returns probabilities .its output comes from a sigmoid.*drop its final"):
        train(config(tmp_path), model=probabilities, train_data=images(50))
    # Written out by hand, or under a tanh (bounded far out too): seen by its values.
    manual = ConvVAE()
    manual.decoder.net.append(nn.Tanh())
    manual.decoder.net.append(Affine(0.5, 0.5))  # (1 + tanh(l)) / 2 = sigmoid(2 l), by other ops
    with pytest.raises(ValueError, match=r"returns probabilities"):
        train(config(tmp_path), model=manual, train_data=images(50))
    bounded = ConvVAE()
    bounded.decoder.net[-1] = nn.Sequential(bounded.decoder.net[-1], nn.Tanh(), nn.Flatten(), nn.Linear(144, 144))
    bounded.decoder.net.append(nn.Sigmoid())
    bounded.decoder.net.append(nn.Unflatten(1, (1, 12, 12)))
    with pytest.raises(ValueError, match=r"returns probabilities"):  # a sigmoid, then a reshape
        train(config(tmp_path), model=bounded, train_data=images(50))
    zero_init = ConvVAE()  # a zero-initialised output layer's logits are all 0: not probabilities
    torch.nn.init.zeros_(zero_init.decoder.net[-1].weight), torch.nn.init.zeros_(zero_init.decoder.net[-1].bias)
    train(config(tmp_path, samples=100, out=str(tmp_path / "zero")), model=zero_init, train_data=images(50))
    with pytest.raises(ValueError, match="shape \\(N, \\*event_shape\\)"):
        train(config(tmp_path), train_data=torch.rand(50))
    with pytest.raises(ValueError, match="NaN or infinite"):
        train(config(tmp_path), train_data=torch.full((10, 4), float("nan")))
    with pytest.raises(ValueError, match="test points have shape \\(5,\\), the training points \\(4,\\)"):
        train(config(tmp_path), train_data=torch.rand(10, 4), test_data=torch.rand(3, 5))
    with pytest.raises(ValueError, match="model must be an nn.Module with encoder"):
        train(config(tmp_path), model=nn.Linear(3, 3), train_data=torch.rand(10, 4))
    with pytest.raises(ValueError, match=r"model.encoder\(x\) failed on x, .* of shape \(16, 144\) .*conv2d"):
        train(config(tmp_path), model=ConvVAE(), train_data=images(50).flatten(1))  # a flat array for a conv VAE
    with pytest.raises(TypeError, match="must be a tensor, a numpy array or a torch Dataset"):
        train(config(tmp_path), train_data=[[0.0, 1.0]])
    assert not (tmp_path / "run").exists()  # nothing was written


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_data_files_on_the_command_line(tmp_path, suffix, capsys):
    x = images(240).squeeze(1).numpy()  # (N, 12, 12)
    path = tmp_path / f"mine{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    elif suffix == ".npz":
        np.savez(path, train=x[:200], test=x[200:])
    else:
        torch.save({"train": torch.from_numpy(x[:200]), "test": torch.from_numpy(x[200:])}, path)
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                str(path),
                "--latent",
                "2",
                "--hidden",
                "32",
                "--batch-size",
                "40",
                "--samples",
                "800",
                "--eval-every",
                "400",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    config, model = load_checkpoint(out)
    assert config.dataset == str(path.resolve())
    test_points = 24 if suffix == ".npy" else 40  # held out 10%, or the file's test array
    assert cli.main(["eval", str(out), "--importance-samples", "20"]) == 0
    assert json.loads((out / "eval.jsonl").read_text())["test_points"] == test_points
    assert cli.main(["plot", str(out)]) == 0
    assert "manifold.png" in capsys.readouterr().out  # J = 2, (12, 12) images


def test_test_data_file_and_bad_files_on_the_command_line(tmp_path, capsys):
    np.save(tmp_path / "train.npy", images(100).numpy())
    np.save(tmp_path / "test.npy", images(30, seed=3).numpy())
    np.save(tmp_path / "pixels.npy", (255 * images(50)).numpy())
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    base = ["train", "--latent", "2", "--hidden", "16", "--batch-size", "20", "--samples", "100", "--no-plots"]
    assert (
        cli.main(
            base
            + [
                "--dataset",
                str(tmp_path / "train.npy"),
                "--test-data",
                str(tmp_path / "test.npy"),
                "--out",
                str(tmp_path / "ok"),
            ]
        )
        == 0
    )
    assert load_checkpoint(tmp_path / "ok")[0].test_data == str(tmp_path / "test.npy")
    capsys.readouterr()
    for dataset, message in [
        ("pixels.npy", "values in \\[0, 255\\]"),
        ("broken.npz", "cannot read data file"),
        ("missing.npy", "does not exist"),
        ("mnits", "--dataset takes a file path or one of"),
    ]:
        assert (
            cli.main(
                base
                + ["--dataset", str(tmp_path / dataset) if "." in dataset else dataset, "--out", str(tmp_path / "bad")]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert re.search(message, err), err
    assert not (tmp_path / "bad").exists()


def test_eval_and_plot_of_a_python_run_say_what_is_missing(tmp_path, capsys):
    torch.manual_seed(0)
    train(config(tmp_path, samples=300), model=ConvVAE(), train_data=images(100))
    assert cli.main(["eval", str(tmp_path / "run")]) == 2
    assert "own model (test_own_data.ConvVAE)" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path / "run")]) == 0  # the learning curve, and a note why nothing else
    captured = capsys.readouterr()
    assert "learning_curve.png" in captured.out and "learning curve only" in captured.err
    # The paper's model on in-memory data: the model is rebuilt, the data cannot be found.
    train(config(tmp_path, samples=300, out=str(tmp_path / "mlp")), train_data=images(100))
    assert cli.main(["eval", str(tmp_path / "mlp")]) == 2
    assert "given to train() in Python" in capsys.readouterr().err


def test_image_shapes():
    assert data.image_shape_of((1, 28, 28)) == (28, 28) == data.image_shape_of((28, 28, 1))
    assert data.image_shape_of((784,)) == (28, 28)
    assert data.image_shape_of((28, 20)) == (28, 20)
    assert data.image_shape_of((3, 8, 8)) is None and data.image_shape_of((10,)) is None


def test_plot_draws_channels_last_images_and_says_why_it_draws_no_colour_ones(tmp_path, capsys):
    # (N, 12, 12, 1) trained, and `plot` drew only the learning curve without a word.
    np.save(tmp_path / "nhwc.npy", images(60).permute(0, 2, 3, 1).numpy())
    np.save(tmp_path / "colour.npy", images(60).expand(-1, 3, -1, -1).numpy())
    base = ["train", "--latent", "2", "--hidden", "16", "--batch-size", "20", "--samples", "40", "--threads", "1"]
    for name, drawn in (("nhwc", True), ("colour", False)):
        assert cli.main([*base, "--dataset", str(tmp_path / f"{name}.npy"), "--out", str(tmp_path / name)]) == 0
        assert (tmp_path / name / "reconstructions.png").exists() == drawn
        capsys.readouterr()
        assert cli.main(["plot", str(tmp_path / name)]) == 0
        note = "learning curve only: points of shape (3, 12, 12) are not grey images"
        assert (note in capsys.readouterr().err) != drawn
