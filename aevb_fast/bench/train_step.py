"""The training-step benchmark (``aevb-fast bench --train``): one full AEVB step of the paper's
MNIST model (encoder, sample, decoder, ELBO, backward, Adagrad step), the same step four ways,
timed side by side and interleaved:

- ``fused``: the ELBO pieces are aevb_fast's operators;
- ``fused-head``: the same, and the decoder's output layer runs inside
  ``af.linear_bernoulli_log_prob(reduction="sum")`` (the logits never stored whole; its matrix
  products are charged to the ELBO region);
- ``reference``: the same model with ``reference.py`` (plain PyTorch);
- ``compiled``: the reference step's forward and backward under ``torch.compile``;
- ``fused+compiled``: the fused step under ``torch.compile``;
- on CUDA also ``fused+graph``: the fused step captured once as a CUDA graph and replayed (what
  ``aevb-fast train`` does there), and ``compiled-ro``: the reference step under
  ``torch.compile(mode="reduce-overhead")`` (Inductor's own CUDA graphs), plain PyTorch's best.

For the two eager providers the profiler splits the step: time in the encoder, the ELBO pieces
(sample, KL, log-likelihood and the loss), the decoder and the optimizer, forward and backward
together (a backward op is charged to the region whose forward op recorded it, by the autograd
sequence number), and the rest (Python, autograd's engine, allocation).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from tqdm import tqdm

from .. import ops, reference, threads
from ..models import VAE
from .harness import format_profiles, interleaved, noisy_mark, row_marks, spread, time_profile
from .memory import (
    cuda_peak_bytes,
    map_large_allocations,
    measure_memory_main,
    peak_bytes_in_fresh_process,
    sampled_peak_bytes,
)
from .op_suite import device_name

PROVIDERS = ("fused", "fused-head", "reference", "compiled", "fused+compiled")
CUDA_PROVIDERS = ("fused+graph", "compiled-ro")
COMPILE_MODES = {"compiled": "default", "fused+compiled": "default", "compiled-ro": "reduce-overhead"}


def providers(device: str) -> tuple[str, ...]:
    return PROVIDERS + (CUDA_PROVIDERS if device.startswith("cuda") else ())


REGIONS = ("encoder", "elbo", "decoder", "optimizer")
DATA, TRAIN_POINTS = 784, 60_000  # MNIST: the pixels, and the training set size (weight decay 1/N)


def make_loss(model: VAE, backend, regions: bool = True, fused_head: bool = False) -> Callable:
    """The negative ELBO of a minibatch (the analytic-KL estimator with L = 1, as the trainer's
    default), with a profiler region around each piece unless ``regions`` is False (a compiled
    graph ignores them). ``fused_head``: the decoder's output layer inside the likelihood
    (``af.linear_bernoulli_log_prob``). ``eps`` fixes the noise (for checks)."""
    record_function = torch.profiler.record_function if regions else (lambda name: contextlib.nullcontext())
    head = model.decoder.head

    def loss(x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        with record_function("encoder"):
            mu, logvar = model.encoder(x)
        with record_function("elbo"):
            z, kl = backend.sample_and_kl(mu, logvar, eps=eps)
        with record_function("decoder"):
            out = model.decoder.features(z) if fused_head else model.decoder(z)
        with record_function("elbo"):
            # Summed as the ELBO sums it (the fused ops then make the gradient in the forward pass).
            if fused_head:
                log_px = backend.linear_bernoulli_log_prob(x, out, head.weight, head.bias, reduction="sum")
            else:
                log_px = backend.bernoulli_log_prob(x, out, reduction="sum")
            return -(log_px - kl.sum()) / x.shape[0]

    return loss


class Step:
    """One provider: its own copy of the model and optimizer, and a loss function."""

    def __init__(self, provider: str, model: VAE):
        self.provider, self.model = provider, copy.deepcopy(model)
        backend = reference if provider in ("reference", "compiled", "compiled-ro") else ops
        mode = COMPILE_MODES.get(provider)
        self.loss = make_loss(self.model, backend, regions=mode is None, fused_head=provider == "fused-head")
        if mode is not None:
            self.loss = torch.compile(self.loss, dynamic=False, mode=mode)
        self.optimizer = torch.optim.Adagrad(self.model.parameters(), lr=0.02, weight_decay=1 / TRAIN_POINTS)

    def __call__(self, x: torch.Tensor) -> None:
        self.loss(x).backward()
        with record_function("optimizer"):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def gradients(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.optimizer.zero_grad(set_to_none=True)
        value = self.loss(x, eps)
        value.backward()
        grads = [p.grad.detach().clone() for p in self.model.parameters()]
        self.optimizer.zero_grad(set_to_none=True)
        return value.detach(), grads


class GraphStep(Step):
    """The fused step captured as one CUDA graph at its first call (after warm-up steps on a side
    stream, torch's recipe) and replayed; x is copied into the graph's input first."""

    def __init__(self, provider: str, model: VAE):
        super().__init__("fused", model)
        self.provider, self.graph, self.static_x = provider, None, None

    def __call__(self, x: torch.Tensor) -> None:
        if self.graph is None:
            self._capture(x)
        self.static_x.copy_(x)
        self.graph.replay()

    def _capture(self, x: torch.Tensor) -> None:
        self.static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                super().__call__(self.static_x)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss(self.static_x).backward()
            self.optimizer.step()


def make_step(provider: str, model: VAE) -> Step:
    return GraphStep(provider, model) if provider == "fused+graph" else Step(provider, model)


def check(steps: dict[str, Step], x: torch.Tensor, latent: int) -> None:
    """A wrong step never gets a time: with the same noise, every provider's loss and gradients
    match the reference's."""
    eps = torch.randn(x.shape[0], latent, generator=torch.Generator().manual_seed(1)).to(x.device)
    ref_loss, ref_grads = steps["reference"].gradients(x, eps)
    for name, step in steps.items():
        value, grads = step.gradients(x, eps)
        ok = torch.allclose(value, ref_loss, rtol=1e-4, atol=1e-4) and all(
            torch.allclose(a, b, rtol=1e-3, atol=1e-3 * max(1.0, b.abs().max().item()))
            for a, b in zip(grads, ref_grads)
        )
        if not ok:
            raise RuntimeError(f"bench --train: the {name} step disagrees with the reference step")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(step: Step, x: torch.Tensor, iterations: int) -> float:
    _sync(str(x.device))
    start = time.perf_counter()
    for _ in range(iterations):
        step(x)
    _sync(str(x.device))
    return (time.perf_counter() - start) / iterations


def profile_shares(step: Step, x: torch.Tensor, iterations: int = 3) -> dict[str, float]:
    """Share of the step's wall time per region, forward and backward together, and 'other'."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    _sync(str(x.device))
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(iterations):
            step(x)
        _sync(str(x.device))
        wall = time.perf_counter() - start
    events = prof.events()
    region_of_seq: dict[int, str] = {}
    seconds = dict.fromkeys(REGIONS, 0.0)
    for event in events:
        if event.name in REGIONS and event.cpu_parent is None:
            seconds[event.name] += event.cpu_time_total / 1e6
            stack = list(event.cpu_children)
            while stack:
                child = stack.pop()
                if child.sequence_nr >= 0:
                    region_of_seq[child.sequence_nr] = event.name
                stack.extend(child.cpu_children)
    prefix = "autograd::engine::evaluate_function: "
    for event in events:
        if event.name.startswith(prefix) and event.cpu_parent is None:
            region = region_of_seq.get(event.sequence_nr)
            if region is not None:
                seconds[region] += event.cpu_time_total / 1e6
    shares = {region: s / wall for region, s in seconds.items()}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def _setup(provider: str, batch: int, hidden: int, latent: int, device: str) -> tuple[Step, torch.Tensor]:
    torch.manual_seed(0)
    model = VAE.paper(DATA, hidden, latent).to(device)
    return make_step(provider, model), torch.rand(batch, DATA, device=device).bernoulli()


def peak_bytes(provider: str, batch: int, hidden: int, latent: int, device: str) -> int:
    """Peak memory of one training step after a warm-up step (bench.memory says how)."""
    if device.startswith("cuda"):
        step, x = _setup(provider, batch, hidden, latent, device)
        if isinstance(step, GraphStep):  # the graph's memory is taken when it is captured
            return cuda_peak_bytes(lambda: step(x))
        step(x)
        return cuda_peak_bytes(lambda: step(x))
    spec = dict(provider=provider, batch=batch, hidden=hidden, latent=latent, threads=torch.get_num_threads())
    return peak_bytes_in_fresh_process("aevb_fast.bench.train_step", spec)


def _measure_memory_here(spec: dict) -> int:
    map_large_allocations()
    torch.set_num_threads(spec["threads"])
    step, x = _setup(spec["provider"], spec["batch"], spec["hidden"], spec["latent"], "cpu")
    step(x)  # warm-up: compilation, optimizer state, library buffers
    return sampled_peak_bytes(lambda: step(x))


def resident_before_step(batch: int, hidden: int, latent: int) -> int:
    """What lives before a step and is not in its peak: the minibatch x (float32) and the
    parameters with Adagrad's state (the gradients are made, and counted, in the step)."""
    parameters = sum(p.numel() for p in VAE.paper(DATA, hidden, latent).parameters())
    return 4 * (batch * DATA + 2 * parameters)


def largest_batch(rows: list[dict], provider: str, budget: float) -> int | None:
    """The largest minibatch whose step fits in `budget` bytes: the step's peak plus what lives
    before it (resident_before_step), on the straight line through the two largest measured
    batches (both grow linearly with M). An estimate from this device's measurements."""
    measured = sorted(
        (r["batch"], r["peak_bytes"][provider] + resident_before_step(r["batch"], r["hidden"], r["latent"]))
        for r in rows
        if "peak_bytes" in r
    )
    if len(measured) < 2:
        return None
    (m1, p1), (m2, p2) = measured[-2:]
    per_sample = (p2 - p1) / (m2 - m1)
    return int((budget - (p2 - per_sample * m2)) / per_sample) if per_sample > 0 else None


def run(
    batches: list[int],
    device: str,
    repeats: int,
    hidden: int = 500,
    latent: int = 20,
    min_time: float = 0.2,
    memory: bool = True,
    matmul: str = "float32",
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """One row per batch size, each handed to `on_row` as soon as it is measured. ``matmul``:
    "float32" or "tf32", every provider's matrix products alike (such rows say "matmul": "tf32")."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if matmul == "tf32" else "highest")
    try:
        return _run(batches, device, repeats, hidden, latent, min_time, memory, matmul, on_row)
    finally:
        torch.set_float32_matmul_precision(previous)


def _run(batches, device, repeats, hidden, latent, min_time, memory, matmul, on_row) -> list[dict]:
    rows = []
    for batch in tqdm(batches, desc="bench --train", unit="batch size"):
        torch._dynamo.reset()  # fresh compilations for each batch size (see bench.run)
        torch.manual_seed(0)
        model = VAE.paper(DATA, hidden, latent).to(device)
        x = torch.rand(batch, DATA, device=device).bernoulli()
        names = providers(device)
        steps = {name: make_step(name, model) for name in names}
        check(steps, x, latent)
        measures = {name: functools.partial(_time, step, x) for name, step in steps.items()}
        probe = None if device.startswith("cuda") else threads.probe()
        timing = interleaved(measures, repeats, min_time)
        for summary in timing.values():
            summary["samples_per_s"] = batch / summary["median_s"]
        shares = {name: profile_shares(steps[name], x) for name in ("fused", "reference")}
        # On a GPU, which kernels a step's time goes to (launch-bound or product-bound).
        kernels = (
            {name: time_profile(functools.partial(step, x), cuda=True) for name, step in steps.items()}
            if device.startswith("cuda")
            else None
        )
        del steps
        peaks = {name: peak_bytes(name, batch, hidden, latent, device) for name in names} if memory else None
        rows.append(
            {
                "suite": "train_step",
                "batch": batch,
                "hidden": hidden,
                "latent": latent,
                "data": DATA,
                "device": device_name(device),
                "threads": torch.get_num_threads(),
                "repeats": repeats,  # a key field: a quick run does not replace a careful one
                "dtype": "float32",
                **({"matmul": "tf32"} if matmul == "tf32" else {}),
                "timing": timing,
                "profile_shares": shares,
                **({"kernels": kernels} if kernels else {}),
                "fused_vs_reference": timing["reference"]["median_s"] / timing["fused"]["median_s"],
                "fused_vs_compiled": timing["compiled"]["median_s"] / timing["fused"]["median_s"],
                "fused_head_vs_fused": timing["fused"]["median_s"] / timing["fused-head"]["median_s"],
                **({"peak_bytes": peaks} if peaks else {}),
                **({"probe": probe} if probe else {}),
            }
        )
        if on_row:
            on_row(rows[-1])
    return rows


def format_table(rows: list[dict]) -> str:
    shown = [p for p in PROVIDERS + CUDA_PROVIDERS if all(p in r["timing"] for r in rows)]  # CUDA's: on CUDA
    header = (
        f"{'batch':>7} "
        + " ".join(f"{p + ' /s':>18}" for p in shown)
        + f" {'fused vs ref':>13} {'ELBO share fused':>17} {'ELBO share ref':>15}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        t, s = r["timing"], r["profile_shares"]
        lines.append(
            f"{r['batch']:>7} "
            + " ".join(f"{t[p]['samples_per_s']:>18,.0f}" for p in shown)
            + f" {r['fused_vs_reference']:>12.2f}x {100 * s['fused']['elbo']:>16.1f}% "
            f"{100 * s['reference']['elbo']:>14.1f}%" + row_marks(r)
        )
    lines.append(
        "samples/s from the median step time; step time median +- half its p20-p80 range: "
        + "; ".join(f"batch {r['batch']}: " + ", ".join(f"{p} {spread(r['timing'][p])}" for p in shown) for r in rows)
    )
    lines.append(
        "fused-head vs fused (time, higher is better): "
        + ", ".join(f"batch {r['batch']}: {r['fused_head_vs_fused']:.2f}x" for r in rows)
    )
    if all("peak_bytes" in r for r in rows):
        lines.append(
            "peak memory of a step (MB): "
            + "; ".join(
                f"batch {r['batch']}: " + ", ".join(f"{p} {r['peak_bytes'][p] / 1e6:.0f}" for p in shown) for r in rows
            )
        )
        for budget in (16e9, 80e9):
            fits = {p: largest_batch(rows, p, budget) for p in shown}
            if all(v is not None for v in fits.values()):
                lines.append(
                    f"largest minibatch in {budget / 1e9:.0f} GB (step peak + x + parameters and optimizer "
                    "state, on the straight line through the two largest batches; an estimate from this "
                    "device's measurements): " + ", ".join(f"{p} {v:,}" for p, v in fits.items())
                )
    if any(r.get("matmul") == "tf32" for r in rows):
        lines.append("matrix products in TF32 on every provider (--matmul tf32)")
    lines.append("shares of the step's wall time from the profiler:")
    for r in rows:
        for name, shares in r["profile_shares"].items():
            parts = ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items())
            lines.append(f"  batch {r['batch']:>6} {name:<9}: {parts}")
    for r in rows:
        if "kernels" in r:
            lines += format_profiles(f"the GPU kernels of one step (torch.profiler), batch {r['batch']}:", r["kernels"])
    return "\n".join(lines + noisy_mark(rows))


if __name__ == "__main__":
    measure_memory_main(_measure_memory_here, "aevb-fast bench --train")
