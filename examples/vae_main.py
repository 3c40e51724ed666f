"""A VAE in the style of pytorch/examples ``vae/main.py`` (784-400-20 MLP, Adam, binary
cross-entropy plus KL, MNIST grey levels), with the ELBO's pieces done by aevb_fast.

    python examples/vae_main.py                     # 10 epochs, fused ops
    python examples/vae_main.py --reference         # the same in plain PyTorch, to compare
    python examples/vae_main.py --epochs 1 --max-steps 20

What changes from pytorch/examples: the decoder returns logits (no sigmoid at its end; apply it
only to show images), ``reparameterize`` and the loss are one fused op each::

    z = af.reparameterize(mu, logvar)
    loss = af.gaussian_kl(mu, logvar).sum() - af.bernoulli_log_prob(x, logits).sum()

Passing a sigmoid's output as ``logits`` would train the wrong objective with no error. Writes
reconstructions and samples to ``--out`` (PNG, matplotlib) after each epoch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import aevb_fast as af


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def decode(self, z):
        return self.fc4(F.relu(self.fc3(z)))  # logits; pytorch/examples ends in a sigmoid here

    def forward(self, x, fused: bool = True):
        mu, logvar = self.encode(x.view(-1, 784))
        if fused:
            z = af.reparameterize(mu, logvar)
        else:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode(z), mu, logvar


def loss_function(logits, x, mu, logvar, fused: bool = True):
    """-ELBO summed over the batch: reconstruction cross-entropy plus KL to N(0, I)."""
    x = x.view(-1, 784)
    if fused:
        return af.gaussian_kl(mu, logvar).sum() - af.bernoulli_log_prob(x, logits).sum()
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def load_mnist(data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from aevb_fast.training.data import find_file, read_idx_images

    train, test = (torch.from_numpy(read_idx_images(find_file(name, data_dir, download=False)).copy())
                   .float().div_(255).reshape(-1, 784) for name in ("mnist_train_images", "mnist_test_images"))
    return train, test


def save_images(model: VAE, x: torch.Tensor, path: Path, fused: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        recon = torch.sigmoid(model(x[:8], fused)[0])
        samples = torch.sigmoid(model.decode(torch.randn(8, 20)))
    rows = [x[:8].view(8, 784), recon, samples]
    fig, axes = plt.subplots(3, 8, figsize=(8, 3.2))
    for r, (row, title) in enumerate(zip(rows, ("data", "reconstruction", "sample"))):
        axes[r, 0].set_title(title, fontsize=7, loc="left")
        for c in range(8):
            axes[r, c].imshow(row[c].view(28, 28).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="VAE MNIST example (pytorch/examples style) with aevb_fast")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many minibatches")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=100)
    parser.add_argument("--reference", action="store_true", help="plain PyTorch instead of the fused ops")
    parser.add_argument("--data-dir", default=None, help="where mnist/ is (default ../shared/data)")
    parser.add_argument("--out", default="vae_results", help="folder for the PNGs of reconstructions and samples")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.epochs < 1 or (args.max_steps is not None and args.max_steps < 1):
        parser.error("--batch-size, --epochs and --max-steps must be at least 1")
    try:
        train, test = load_mnist(args.data_dir)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"vae_main: {error}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    fused = not args.reference
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, args.epochs + 1):
        model.train()
        order, total, seen, start = torch.randperm(len(train)), 0.0, 0, time.perf_counter()
        for step, at in enumerate(range(0, len(train), args.batch_size)):
            if args.max_steps is not None and step >= args.max_steps:
                break
            x = train[order[at:at + args.batch_size]]
            optimizer.zero_grad()
            logits, mu, logvar = model(x, fused)
            loss = loss_function(logits, x, mu, logvar, fused)
            if not torch.isfinite(loss):  # before the step, so that the weights stay as they were
                print(f"vae_main: the loss became {loss.item()} at epoch {epoch}, step {step}", file=sys.stderr)
                return 1
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item(), seen + len(x)
            if step % args.log_interval == 0:
                print(f"Train Epoch: {epoch} [{seen}/{len(train)}]\tLoss: {loss.item() / len(x):.4f}")
        elapsed = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            test_loss = 0.0
            for x in test.split(1000):
                logits, mu, logvar = model(x, fused)
                test_loss += loss_function(logits, x, mu, logvar, fused).item()
        print(f"====> Epoch: {epoch} Average loss: {total / seen:.4f} ({seen / elapsed:.0f} samples/s)"
              f"\n====> Test set loss: {test_loss / len(test):.4f}")
        save_images(model, test, out / f"epoch_{epoch}.png", fused)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("vae_main: interrupted")
