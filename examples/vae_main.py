"""A VAE in the style of pytorch/examples ``vae/main.py`` (784-400-20 MLP, Adam, binary
cross-entropy plus KL, MNIST grey levels), with the ELBO's pieces done by aevb_fast.

    python examples/vae_main.py                     # 10 epochs, fused ops
    python examples/vae_main.py --reference         # the same in plain PyTorch, to compare
    python examples/vae_main.py --epochs 1 --max-steps 20
    python examples/vae_main.py --compare           # where the speed comes from: three variants

What changes from pytorch/examples: the decoder returns logits (no sigmoid at its end; apply it
only to show images), ``reparameterize`` and the loss are one fused op each::

    z = af.reparameterize(mu, logvar)
    loss = af.gaussian_kl(mu, logvar).sum() - af.bernoulli_log_prob(x, logits, reduction="sum")

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
        return af.gaussian_kl(mu, logvar).sum() - af.bernoulli_log_prob(x, logits, reduction="sum")
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def original_loss(logits, x, mu, logvar):
    """pytorch/examples as written: the decoder's sigmoid, then the cross-entropy of probabilities."""
    bce = F.binary_cross_entropy(torch.sigmoid(logits), x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


# The three programs --compare runs: the original, the logits change alone (plain PyTorch, a fix
# any user can make), and the logits change with the fused ops. (forward's `fused`, the loss.)
VARIANTS = {
    "pytorch/examples": (False, original_loss),
    "logits, plain PyTorch": (False, lambda *a: loss_function(*a, fused=False)),
    "logits, aevb_fast": (True, lambda *a: loss_function(*a, fused=True)),
}


def compare(train: torch.Tensor, batch_sizes: list[int], repeats: int, min_time: float) -> list[dict]:
    """Training steps of the three variants from the same weights, timed side by side (round by
    round, on the same minibatches), with the first step's losses under the same noise."""
    from aevb_fast.bench.harness import interleaved

    rows = []
    for batch_size in batch_sizes:
        torch.manual_seed(0)
        start = VAE()
        x = train[:batch_size]
        with torch.no_grad():  # the same noise for all three: the losses must agree
            mu, logvar = start.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            losses = {
                name: loss(start.decode(z), x, mu, logvar).item() / batch_size for name, (_, loss) in VARIANTS.items()
            }
        measures = {}
        for name, (fused, loss) in VARIANTS.items():
            model = VAE()
            model.load_state_dict(start.state_dict())
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

            def measure(iterations, model=model, optimizer=optimizer, fused=fused, loss=loss):
                began = time.perf_counter()
                for _ in range(iterations):
                    optimizer.zero_grad()
                    logits, mu, logvar = model(x, fused)
                    loss(logits, x, mu, logvar).backward()
                    optimizer.step()
                return (time.perf_counter() - began) / iterations

            measures[name] = measure
        timing = interleaved(measures, repeats, min_time)
        rows.append({"batch": batch_size, "loss": losses, "timing": timing})
    return rows


def print_comparison(rows: list[dict]) -> None:
    names = list(VARIANTS)
    print(
        "| batch | "
        + " | ".join(f"{n} (ms/step)" for n in names)
        + " | logits change alone | aevb_fast's own share | together |"
    )
    print("|---:|" + "---:|" * (len(names) + 3))
    for row in rows:
        t = [row["timing"][n]["median_s"] for n in names]
        cells = " | ".join(f"{1e3 * v:.2f}" for v in t)
        print(f"| {row['batch']} | {cells} | {t[1] / t[0]:.2f} | {t[2] / t[1]:.2f} | {t[2] / t[0]:.2f} |")
    print(
        "(time ratios, medians measured side by side: below 1 is faster. 'logits change alone' ="
        " plain PyTorch with logits / the original; 'aevb_fast's own share' = fused / plain logits.)"
    )
    for row in rows:
        print(
            f"batch {row['batch']}: first-step loss per example, same noise: "
            + ", ".join(f"{n} {v:.4f}" for n, v in row["loss"].items())
        )


def load_mnist(data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from aevb_fast.training.data import find_file, read_idx_images

    train, test = (
        torch.from_numpy(read_idx_images(find_file(name, data_dir, download=False)).copy())
        .float()
        .div_(255)
        .reshape(-1, 784)
        for name in ("mnist_train_images", "mnist_test_images")
    )
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
    parser.add_argument(
        "--compare",
        action="store_true",
        help="time training steps of pytorch/examples as written, with the logits change in "
        "plain PyTorch, and with aevb_fast, side by side; trains nothing, writes nothing",
    )
    parser.add_argument("--compare-batch-sizes", default="128,2048", help="batch sizes for --compare")
    parser.add_argument("--repeats", type=int, default=11, help="--compare's timed rounds (median)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.epochs < 1 or (args.max_steps is not None and args.max_steps < 1):
        parser.error("--batch-size, --epochs and --max-steps must be at least 1")
    try:
        compare_sizes = [int(b) for b in args.compare_batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--compare-batch-sizes must be integers separated by commas, got {args.compare_batch_sizes!r}")
    if min(compare_sizes) < 1 or args.repeats < 1:
        parser.error("--compare-batch-sizes and --repeats must be at least 1")
    try:
        train, test = load_mnist(args.data_dir)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"vae_main: {error}", file=sys.stderr)
        return 2
    if args.compare:
        print_comparison(compare(train, compare_sizes, args.repeats, min_time=0.2))
        return 0
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
            x = train[order[at : at + args.batch_size]]
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
        print(
            f"====> Epoch: {epoch} Average loss: {total / seen:.4f} ({seen / elapsed:.0f} samples/s)"
            f"\n====> Test set loss: {test_loss / len(test):.4f}"
        )
        save_images(model, test, out / f"epoch_{epoch}.png", fused)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("vae_main: interrupted")
