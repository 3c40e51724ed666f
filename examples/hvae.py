"""A small VDVAE-style hierarchical VAE on binarized MNIST: a bottom-up encoder, then a top-down
decoder of 8 stochastic layers over three resolutions (7x7, 14x14, 28x28), each with a learned
prior p(z_i | z_<i) and a posterior q(z_i | x, z_<i) over (B, C, H, W) latent maps.

    python examples/hvae.py                         # 1 epoch, fused ops (aevb_fast)
    python examples/hvae.py --reference             # the same model with VDVAE's formulas
    python examples/hvae.py --compare               # both side by side: loss, time, memory

Each layer's sample and KL to its learned prior are one fused op::

    z, kl = af.sample_and_kl(q_mu, q_logvar, p_mu, p_logvar, event_dims=3)

where VDVAE (and the dozens of repositories that copy it) write ``draw_gaussian_diag_samples``
and ``gaussian_analytical_kl`` in plain PyTorch, as ``--reference`` does here. The model is the
same either way (its log-variances are VDVAE's 2 log sigma). ``--compare`` runs both in one
process: the loss of one minibatch with the same noise, then, at two batch sizes, the step time
(forward and backward), the step's peak tensor memory and the share of the step spent in
sampling and KL, and plots them to ``--out``/hvae_compare.png (``--out`` is by default
``runs/hvae-compare`` in the folder it runs from, which the repository's .gitignore ignores).
Training writes no file.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import aevb_fast as af
from aevb_fast.bench.memory import profiled_peak_bytes, profiler_markers_dropped  # noqa: F401 (the tests use it)

# The top-down path: (resolution, stochastic layers there), coarse to fine.
LAYERS = ((7, 3), (14, 3), (28, 2))


# ---- VDVAE's helpers, as its repository writes them (what --reference runs) -----------------

def gaussian_analytical_kl(mu1, mu2, logsigma1, logsigma2):
    return -0.5 + logsigma2 - logsigma1 + 0.5 * (logsigma1.exp() ** 2 + (mu1 - mu2) ** 2) / (logsigma2.exp() ** 2)


def draw_gaussian_diag_samples(mu, logsigma, eps=None):
    eps = torch.empty_like(mu).normal_(0.0, 1.0) if eps is None else eps
    return torch.exp(logsigma) * eps + mu


def sample_and_kl(q_mu, q_logvar, p_mu, p_logvar, fused: bool, eps=None):
    """One layer's z ~ q and KL(q || p) summed over (C, H, W): one fused op, or VDVAE's two."""
    if fused:
        return af.sample_and_kl(q_mu, q_logvar, p_mu, p_logvar, eps=eps, event_dims=3)
    z = draw_gaussian_diag_samples(q_mu, 0.5 * q_logvar, eps)
    return z, gaussian_analytical_kl(q_mu, p_mu, 0.5 * q_logvar, 0.5 * p_logvar).sum(dim=(1, 2, 3))


# ---- the model --------------------------------------------------------------------------------

class Block(nn.Module):
    """VDVAE's bottleneck residual block: 1x1, 3x3, 3x3, 1x1 convolutions with GELUs."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, residual: bool):
        super().__init__()
        self.residual = residual
        self.convs = nn.ModuleList([nn.Conv2d(c_in, c_mid, 1), nn.Conv2d(c_mid, c_mid, 3, padding=1),
                                    nn.Conv2d(c_mid, c_mid, 3, padding=1), nn.Conv2d(c_mid, c_out, 1)])

    def forward(self, x):
        h = x
        for conv in self.convs:
            h = conv(F.gelu(h))
        return x + h if self.residual else h


class DecoderLayer(nn.Module):
    """One stochastic layer of the top-down path (VDVAE's DecBlock)."""

    def __init__(self, width: int, zdim: int):
        super().__init__()
        self.zdim = zdim
        self.posterior = Block(2 * width, width // 4, 2 * zdim, residual=False)
        self.prior = Block(width, width // 4, 2 * zdim + width, residual=False)
        self.z_proj = nn.Conv2d(zdim, width, 1)
        self.resnet = Block(width, width // 4, width, residual=True)

    def forward(self, h, activation, fused: bool, eps=None):
        q_mu, q_logvar = self.posterior(torch.cat([h, activation], dim=1)).chunk(2, dim=1)
        prior = self.prior(h)
        p_mu, p_logvar, h_prior = prior[:, :self.zdim], prior[:, self.zdim:2 * self.zdim], prior[:, 2 * self.zdim:]
        z, kl = sample_and_kl(q_mu, q_logvar, p_mu, p_logvar, fused, eps)
        h = h + h_prior + self.z_proj(z)
        return self.resnet(h), kl


class HierarchicalVAE(nn.Module):
    def __init__(self, width: int = 32, zdim: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.encoder = nn.ModuleDict({str(r): Block(width, width // 4, width, residual=True) for r, _ in LAYERS})
        self.h_top = nn.Parameter(torch.zeros(1, width, LAYERS[0][0], LAYERS[0][0]))
        self.decoder = nn.ModuleList(DecoderLayer(width, zdim) for _, n in LAYERS for _ in range(n))
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def latent_shapes(self, batch: int) -> list[tuple[int, ...]]:
        return [(batch, layer.zdim, r, r) for r, n in LAYERS for layer in [self.decoder[0]] * n]

    def forward(self, x, fused: bool = True, eps: list | None = None):
        """The negative ELBO of each image, in nats: (B,)."""
        activations, h = {}, self.stem(x)
        for r, _ in reversed(LAYERS):  # bottom-up: 28, 14, 7
            h = F.adaptive_avg_pool2d(h, r) if h.shape[-1] != r else h
            h = activations[r] = self.encoder[str(r)](h)
        h, kls, i = self.h_top.expand(x.shape[0], -1, -1, -1), [], 0
        for r, n in LAYERS:  # top-down: 7, 14, 28
            h = F.interpolate(h, size=r) if h.shape[-1] != r else h
            for _ in range(n):
                h, kl = self.decoder[i](h, activations[r], fused, None if eps is None else eps[i])
                kls.append(kl)
                i += 1
        logits = self.out(h)
        if fused:
            log_px = af.bernoulli_log_prob(x, logits, event_dims=3)
        else:
            log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=(1, 2, 3))
        return torch.stack(kls).sum(0) - log_px


# ---- data, training, comparison ---------------------------------------------------------------

def load_data(data_dir: str | None):
    from aevb_fast.training.data import load

    data = load("binarized_mnist", data_dir, download=False)
    return data.train.view(-1, 1, 28, 28), data.test.view(-1, 1, 28, 28)


def train(model, x_train, args, fused: bool) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    order, losses = torch.randperm(len(x_train)), []
    steps = (len(x_train) + args.batch_size - 1) // args.batch_size
    if args.max_steps is not None:
        steps = min(steps, args.max_steps)
    for step in range(steps):
        x = x_train[order[step * args.batch_size:(step + 1) * args.batch_size]]
        loss = model(x, fused).mean()
        if not torch.isfinite(loss):  # before the step, so that the weights stay as they were
            raise FloatingPointError(f"the loss became {loss.item()} at step {step}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % args.log_interval == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps}  loss {loss.item():.2f} nats")
    return statistics.fmean(losses[-10:])


def peak_bytes(fn, reset) -> int:
    """The step's peak tensor memory from the profiler's records (aevb_fast.bench.memory); `reset`
    frees what an earlier call left (the gradients) before the profiler starts."""
    reset()
    return profiled_peak_bytes(fn)


def interleaved_medians(calls: dict, repeats: int, min_time: float = 0.05) -> dict:
    """The median seconds per call of each, timed round by round so that a shared machine's drift
    hits them alike; in a round each runs as many times in a row as last `min_time` (once for a
    step, tens of times for the sampling and KL alone), after a warm-up call."""
    inner = {}
    for name, fn in calls.items():
        start = time.perf_counter()
        fn()
        inner[name] = max(1, int(min_time / (time.perf_counter() - start)))
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            times[name].append((time.perf_counter() - start) / inner[name])
    return {name: statistics.median(t) for name, t in times.items()}


def sampling_and_kl_of_a_step(model, x, fused: bool):
    """The sampling and KL of one step as a call to time alone: every layer's, forward and
    backward, on the layer's own posterior and prior parameters from the step."""
    captured = []
    original = globals()["sample_and_kl"]

    def capture(*args, **kwargs):
        captured.append([t.detach() for t in args[:4]])
        return original(*args, **kwargs)

    globals()["sample_and_kl"] = capture
    try:
        with torch.no_grad():
            model(x, fused)
    finally:
        globals()["sample_and_kl"] = original
    leaves = [[t.clone().requires_grad_() for t in params] for params in captured]
    grads = [(torch.randn_like(params[0]), torch.randn(params[0].shape[0])) for params in captured]

    def sampling_and_kl():
        outputs, output_grads = [], []
        for params, (grad_z, grad_kl) in zip(leaves, grads):
            outputs += original(*params, fused=fused)
            output_grads += [grad_z, grad_kl]
        # One backward pass for all the layers, as in the step (autograd's fixed cost per pass,
        # ~60 us here, is paid once there), the gradients returned rather than accumulated into
        # .grad (as in the step, where they flow on into the layers).
        torch.autograd.grad(outputs, [t for params in leaves for t in params], output_grads)

    return sampling_and_kl


def compare(args, x_test) -> list[dict]:
    """Fused and reference side by side in this process; returns the table's rows."""
    torch.manual_seed(args.seed)
    model = HierarchicalVAE(args.width, args.zdim)
    x = x_test[: args.batch_sizes[0]]
    eps = [torch.randn(s) for s in model.latent_shapes(len(x))]
    with torch.no_grad():
        fused_loss, reference_loss = model(x, True, eps).mean().item(), model(x, False, eps).mean().item()
    print(f"loss with the same noise: fused {fused_loss:.6f}, reference {reference_loss:.6f} nats "
          f"(relative difference {abs(fused_loss - reference_loss) / abs(reference_loss):.1e})")
    rows = []
    modes = (("fused", True), ("reference", False))
    for batch in args.batch_sizes:
        x = x_test[:batch]

        def step_of(fused):
            def step():
                model.zero_grad(set_to_none=True)
                model(x, fused).mean().backward()
            return step

        steps = {name: step_of(fused) for name, fused in modes}
        step_times = interleaved_medians(steps, args.repeats)
        sampling_times = interleaved_medians({name: sampling_and_kl_of_a_step(model, x, fused) for name, fused in modes},
                                             args.repeats)
        for name, fused in modes:
            peak = peak_bytes(steps[name], reset=lambda: model.zero_grad(set_to_none=True))
            rows.append({"batch": batch, "ops": name, "step_s": step_times[name], "peak_bytes": peak,
                         "sampling_share": sampling_times[name] / step_times[name],
                         "loss_same_noise": fused_loss if fused else reference_loss})
    print(f"{'batch':>6} {'ops':<10} {'step':>10} {'peak MB':>9} {'sample+KL share':>16}")
    for r in rows:
        print(f"{r['batch']:>6} {r['ops']:<10} {1e3 * r['step_s']:>8.1f}ms {r['peak_bytes'] / 2**20:>9.1f} "
              f"{100 * r['sampling_share']:>15.1f}%")
    for batch in args.batch_sizes:
        fused, ref = (r for r in rows if r["batch"] == batch)
        print(f"B={batch}: step {ref['step_s'] / fused['step_s']:.2f}x faster fused, peak memory "
              f"{fused['peak_bytes'] / ref['peak_bytes']:.2f}x the reference's, sample+KL share "
              f"{fused['sampling_share'] / ref['sampling_share']:.2f}x the reference's")
    path = Path(args.out) / "hvae_compare.png"
    plot(rows, path)
    print(f"figure: {path}")
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = figure(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def figure(rows: list[dict]):
    """The comparison's three panels of bars, their legend in a row beneath them (off the bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.4))
    for ax, key, label, scale in zip(axes, ("step_s", "peak_bytes", "sampling_share"),
                                     ("step time (ms)", "peak tensor memory (MB)", "sample+KL share of step (%)"),
                                     (1e3, 2.0**-20, 100)):
        for k, name in enumerate(("fused", "reference")):
            values = [scale * r[key] for b in batches for r in rows if r["batch"] == b and r["ops"] == name]
            ax.bar([i + 0.4 * k for i in range(len(batches))], values, width=0.4, label=name)
        ax.set_xticks([i + 0.2 for i in range(len(batches))], [f"B={b}" for b in batches])
        ax.set_title(label, fontsize=9)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    return fig


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        """A wrong option is one line (not the usage's several) and exit status 2, as argparse's."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def bounded_int(low: int, high: int = 2**63 - 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be below 2**63, got {value}")
        return value
    return parse


def learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def positive_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected two positive batch sizes, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="A VDVAE-style hierarchical VAE on binarized MNIST with aevb_fast")
    parser.add_argument("--reference", action="store_true", help="VDVAE's plain PyTorch formulas instead of fused ops")
    parser.add_argument("--compare", action="store_true",
                        help="fused and reference side by side (no training); prints a table and writes "
                             "OUT/hvae_compare.png")
    parser.add_argument("--batch-size", type=bounded_int(1), default=64)
    parser.add_argument("--batch-sizes", type=positive_ints, default=[32, 128], help="--compare: two batch sizes")
    parser.add_argument("--repeats", type=bounded_int(1), default=5, help="--compare: timed repeats (median)")
    parser.add_argument("--max-steps", type=bounded_int(1), default=None, help="stop after this many minibatches")
    parser.add_argument("--width", type=bounded_int(4), default=32, help="channels of the residual stream")
    parser.add_argument("--zdim", type=bounded_int(1), default=8, help="channels of each latent map")
    parser.add_argument("--lr", type=learning_rate, default=2e-3, help="Adam's learning rate (default 2e-3)")
    parser.add_argument("--seed", type=bounded_int(0), default=0)
    parser.add_argument("--log-interval", type=bounded_int(1), default=50, help="print the loss every this many steps")
    parser.add_argument("--test-images", type=bounded_int(1), default=2000,
                        help="test images the final loss averages over")
    parser.add_argument("--data-dir", default=None, help="where binarized_mnist/ is (default ../shared/data)")
    parser.add_argument("--out", default="runs/hvae-compare",
                        help="--compare: the folder its figure hvae_compare.png goes to, made if missing (default "
                             "runs/hvae-compare in the current folder, which the repository's .gitignore ignores); "
                             "training writes nothing")
    args = parser.parse_args(argv)
    if args.compare and args.reference:
        parser.error("--compare runs both; drop --reference")
    if args.compare:
        try:  # before the minutes of measuring, so that a folder it cannot write stops it at once
            Path(args.out).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            parser.error(f"--out {args.out}: cannot make the folder ({error.strerror or error})")
    try:
        x_train, x_test = load_data(args.data_dir)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"hvae: {error}", file=sys.stderr)
        return 2
    if args.compare:
        compare(args, x_test)
        return 0
    torch.manual_seed(args.seed)
    model = HierarchicalVAE(args.width, args.zdim)
    try:
        final = train(model, x_train, args, fused=not args.reference)
    except FloatingPointError as error:
        print(f"hvae: {error}", file=sys.stderr)
        return 1
    with torch.no_grad():
        test_loss = statistics.fmean(model(x, not args.reference).mean().item()
                                    for x in x_test[:args.test_images].split(500))
    print(f"train loss (last 10 steps) {final:.2f} nats, test loss {test_loss:.2f} nats")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("hvae: interrupted")
