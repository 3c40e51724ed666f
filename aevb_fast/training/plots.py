"""Pictures of a run, as PNG files in its directory: the learning curve (bound against samples
seen, as in the paper's Figure 2), reconstructions of test images, samples from the prior, and
for a 2-D latent space the learned manifold of the paper's Figure 4."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

# Figures made with matplotlib's object API, never pyplot: in a notebook, pyplot's backend
# (and so plt.show) stays the user's.
from matplotlib.figure import Figure

from .checkpoint import RunError, build_model, read_metrics, resolve_run


def learning_curve(records: list[dict], path: Path, title: str = "") -> None:
    """The bound at every evaluation, the untrained model's (0 samples) included, each a marker;
    evaluations below the divergence threshold are marked. The x-axis is logarithmic (the paper's
    Figure 2) past the first evaluation and linear before it, so that 0 has its place."""
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    x = [r["samples_seen"] for r in records]
    ax.plot(x, [r["train_elbo"] for r in records], "o-", markersize=4, label="train")
    ax.plot(x, [r["test_elbo"] for r in records], "s--", markersize=4, label="test")
    unhealthy = [r for r in records if r.get("healthy") is False]
    if unhealthy:
        ax.plot(
            [r["samples_seen"] for r in unhealthy],
            [r["train_elbo"] for r in unhealthy],
            "x",
            color="red",
            markersize=10,
            markeredgewidth=2,
            label="below the divergence threshold",
        )
    positive = [v for v in x if v > 0]
    if positive:
        ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xlabel("training samples seen", fontsize=12)
    ax.set_ylabel("lower bound (nats per data point)", fontsize=12)
    ax.set_title(title, fontsize=13)
    ax.tick_params(labelsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _decoder_mean(model, z: torch.Tensor) -> torch.Tensor:
    out = model.decoder(z)
    return out[0] if isinstance(out, tuple) else torch.sigmoid(out)


def _image_grid(images: torch.Tensor, rows: int, cols: int, shape: tuple[int, int], path: Path, title: str) -> None:
    h, w = shape
    grid = images[: rows * cols].reshape(rows, cols, h, w).permute(0, 2, 1, 3).reshape(rows * h, cols * w)
    width = cols * w / 14  # inches: about 7 pixels of the PNG (dpi 100) per image pixel
    fig = Figure(figsize=(width, rows * h / 14 + 0.6))
    ax = fig.subplots()
    ax.imshow(grid.cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=max(12.0, 1.2 * width))  # readable at 100% on a 2000-pixel-wide image
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@torch.no_grad()
def pictures(model, data, out: Path) -> list[Path]:
    """Reconstructions, prior samples and (J = 2) the manifold, for data that are grey images
    (``data.image_shape``); none for other event shapes."""
    if data.image_shape is None:
        return []
    model.eval()
    paths = []
    x = data.test[:10]
    mu, _ = model.encoder(x)
    latent = mu.shape[-1]
    both = torch.cat([x.flatten(1), _decoder_mean(model, mu).flatten(1)])
    paths.append(out / "reconstructions.png")
    _image_grid(both, 2, len(x), data.image_shape, paths[-1], "test images (top) and reconstructions")
    z = torch.randn(100, latent, generator=torch.Generator().manual_seed(0)).to(x.device)
    paths.append(out / "prior_samples.png")
    _image_grid(_decoder_mean(model, z), 10, 10, data.image_shape, paths[-1], "decoder means of z ~ N(0, I)")
    if latent == 2:  # Figure 4: a grid through the inverse Gaussian CDF
        q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 20))
        z = torch.stack(torch.meshgrid(q, q, indexing="ij"), -1).reshape(-1, 2).to(x.device)
        paths.append(out / "manifold.png")
        _image_grid(_decoder_mean(model, z), 20, 20, data.image_shape, paths[-1], "learned data manifold")
    model.train()
    return paths


def plot_run(run: str | Path, model=None, data=None) -> list[Path]:
    """All pictures of a run directory; the model and data are read from it when not given
    (the learning curve alone, with a note, when they cannot be)."""
    run_dir = resolve_run(run)
    run = run_dir.path
    records = read_metrics(run)
    if not records:
        raise RunError(f"{run} holds no metrics.jsonl: not a training run, or one that never evaluated")
    paths = [run / "learning_curve.png"]
    learning_curve(records, paths[0], title=run.name)
    if model is None:
        from .evaluate import load_run_data

        try:
            state = run_dir.load()
            model, data = build_model(state), load_run_data(state)
        except RunError as error:  # a run of the user's own model or in-memory data: the curve only
            print(f"aevb-fast plot: the learning curve only: {error}", file=sys.stderr)
            return paths
    if data.image_shape is None:
        print(
            f"plots: the learning curve only: points of shape {tuple(data.event_shape)} are not grey images "
            "((H, W), (1, H, W), (H, W, 1), or a square number of values)",
            file=sys.stderr,
        )
    return paths + pictures(model, data, run)
