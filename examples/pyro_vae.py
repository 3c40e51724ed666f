"""The VAE of Pyro's tutorial (MLP encoder and decoder, 784-400-50, Adam) trained on MNIST with
Pyro's own distributions or with aevb_fast's, under Trace_ELBO or TraceMeanField_ELBO.

    python examples/pyro_vae.py                       # aevb_fast's distributions, Trace_ELBO
    python examples/pyro_vae.py --dists pyro --elbo meanfield --steps 500
    python examples/pyro_vae.py --compare --steps 300 # all four side by side: loss and samples/s

What changes between the two (see ``model`` and ``guide``): the guide samples
``DiagonalNormal(z_loc, z_logvar)`` instead of ``Normal(z_loc, z_scale).to_event(1)``, the
prior is ``StandardNormal(z_dim)`` (the plate expands it), and the likelihood is
``BernoulliLogits(decoder_logits)``: the decoder's output *before* the sigmoid. (The tutorial
passes the sigmoid's output as Bernoulli probabilities; here both versions use logits, the
numerically stable form.) MNIST is read from ../shared/data (or $AEVB_FAST_DATA), grey levels
in [0, 1] as in the tutorial.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

try:
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
    from pyro.optim import Adam
except ImportError:
    sys.exit("pyro_vae: this example needs Pyro: pip install 'pyro-ppl>=1.9' (it keeps your torch)")

from aevb_fast.contrib import pyro as fused

ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}


class Encoder(nn.Module):
    def __init__(self, z_dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, hidden), nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)

    def forward(self, x):
        hidden = nn.functional.softplus(self.fc1(x))
        return self.fc21(hidden), self.fc22(hidden)  # z_loc, z_logvar


class Decoder(nn.Module):
    def __init__(self, z_dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc21 = nn.Linear(z_dim, hidden), nn.Linear(hidden, 784)

    def forward(self, z):
        return self.fc21(nn.functional.softplus(self.fc1(z)))  # logits: no sigmoid here


class VAE(nn.Module):
    def __init__(self, dists: str = "aevb_fast", z_dim: int = 50, hidden: int = 400):
        super().__init__()
        if dists not in ("aevb_fast", "pyro"):
            raise ValueError(f"dists must be 'aevb_fast' or 'pyro', got {dists!r}")
        self.dists, self.z_dim = dists, z_dim
        self.encoder, self.decoder = Encoder(z_dim, hidden), Decoder(z_dim, hidden)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            if self.dists == "aevb_fast":
                z = pyro.sample("latent", fused.StandardNormal(self.z_dim, device=x.device, dtype=x.dtype))
                pyro.sample("obs", fused.BernoulliLogits(self.decoder(z)), obs=x)
            else:
                prior = dist.Normal(x.new_zeros(x.shape[0], self.z_dim), x.new_ones(x.shape[0], self.z_dim))
                z = pyro.sample("latent", prior.to_event(1))
                # validate_args=False: grey levels are not {0, 1} (as in the tutorial)
                pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z), validate_args=False).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_logvar = self.encoder(x)
            if self.dists == "aevb_fast":
                pyro.sample("latent", fused.DiagonalNormal(z_loc, z_logvar))
            else:
                pyro.sample("latent", dist.Normal(z_loc, torch.exp(0.5 * z_logvar)).to_event(1))


def load_mnist(data_dir: str | None = None) -> torch.Tensor:
    from aevb_fast.training.data import find_file, read_idx_images

    images = read_idx_images(find_file("mnist_train_images", data_dir, download=False))
    return torch.from_numpy(images.copy()).float().div_(255).reshape(len(images), 784)


def train(images: torch.Tensor, dists: str, elbo: str, steps: int, batch_size: int = 256,
          seed: int = 0, lr: float = 1e-3, quiet: bool = True, validate: bool = False) -> dict:
    """Trains a fresh VAE for `steps` minibatches; returns the loss per step (-ELBO per data point)
    and the samples/s of the steps after the first 10 (warm-up). Pyro's checks of arguments and
    samples are off unless `validate`, as in the tutorial."""
    with pyro.validation_enabled(validate):
        return _train(images, dists, elbo, steps, batch_size, seed, lr, quiet)


def _train(images, dists, elbo, steps, batch_size, seed, lr, quiet) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    vae = VAE(dists)
    svi = SVI(vae.model, vae.guide, Adam({"lr": lr}), loss=ELBOS[elbo]())
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    losses, start = [], None
    for step in range(steps):
        if step == min(10, steps - 1):
            start = time.perf_counter()
        at = (step * batch_size) % (len(images) - batch_size + 1)
        x = images[order[at:at + batch_size]]
        losses.append(svi.step(x) / batch_size)
        if not quiet and (step + 1) % 100 == 0:
            print(f"  step {step + 1}: loss {losses[-1]:.2f}", flush=True)
    timed = steps - min(10, steps - 1)
    return {"losses": losses, "samples_per_s": timed * batch_size / (time.perf_counter() - start)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dists", choices=("aevb_fast", "pyro"), default="aevb_fast")
    parser.add_argument("--elbo", choices=tuple(ELBOS), default="trace")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="where mnist/train-images-idx3-ubyte is (default ../shared/data)")
    parser.add_argument("--compare", action="store_true", help="train all four (dists x ELBO) and print a table")
    parser.add_argument("--validate", action="store_true", help="Pyro's argument and sample checks on (slower)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be at least 1")
    try:
        images = load_mnist(args.data_dir)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"pyro_vae: {error}", file=sys.stderr)
        return 2
    if args.batch_size > len(images):
        parser.error(f"--batch-size {args.batch_size} is larger than the {len(images)} training images")
    runs = ([(d, e) for e in ELBOS for d in ("pyro", "aevb_fast")] if args.compare else [(args.dists, args.elbo)])
    print(f"{'dists':<10} {'ELBO':<10} {'loss (last 10% of steps)':>25} {'samples/s':>10}")
    for dists, elbo in runs:
        result = train(images, dists, elbo, args.steps, args.batch_size, args.seed, quiet=args.compare,
                       validate=args.validate)
        tail = result["losses"][-max(1, args.steps // 10):]
        print(f"{dists:<10} {elbo:<10} {sum(tail) / len(tail):>25.2f} {result['samples_per_s']:>10.0f}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("pyro_vae: interrupted")
