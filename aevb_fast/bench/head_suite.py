"""The linear-head benchmark (``aevb-fast bench --head``): the decoder's output layer and its
Bernoulli log-likelihood, forward and backward (gradients of h, weight and bias), four ways:

- ``eager``: ``F.linear`` then ``af.bernoulli_log_prob``, summed: the logits (L x B x D) and
  their gradient exist whole;
- ``compiled``: the same function under ``torch.compile``;
- ``fused-none``: ``af.linear_bernoulli_log_prob(reduction="none")`` summed afterwards (the
  per-row path, whose backward recomputes each chunk's logits);
- ``fused-sum``: ``reduction="sum"`` (the gradients made in the forward pass).

Time: medians of interleaved rounds (``harness.interleaved``). Peak memory: ``bench.memory``
(each provider in a fresh process on the CPU), including the gradients every provider returns.
Each row also holds one step of each provider under torch.profiler (``harness.time_profile``):
on a GPU, which kernels the time went to.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import ops
from .harness import format_profiles, interleaved, noisy, noisy_mark, spread, time_profile
from .memory import (
    cuda_peak_bytes,
    map_large_allocations,
    measure_memory_main,
    peak_bytes_in_fresh_process,
    sampled_peak_bytes,
)
from .op_suite import device_name

PROVIDERS = ("eager", "compiled", "fused-none", "fused-sum")


def _eager(x, h, weight, bias):
    return ops.bernoulli_log_prob(x, F.linear(h, weight, bias)).sum()


def make_loss(provider: str) -> Callable:
    if provider == "eager":
        return _eager
    if provider == "compiled":
        return torch.compile(_eager, fullgraph=True)
    if provider == "fused-none":
        return lambda x, h, w, b: ops.linear_bernoulli_log_prob(x, h, w, b).sum()
    if provider == "fused-sum":
        return lambda x, h, w, b: ops.linear_bernoulli_log_prob(x, h, w, b, reduction="sum")
    raise ValueError(f"bench --head: unknown provider {provider!r}; choose from {PROVIDERS}")


def make_inputs(batch: int, samples: int, data: int, hidden: int, device: str) -> list[torch.Tensor]:
    """Binary x (B, D), h (L, B, H) as a tanh layer gives, the paper's N(0, 0.01^2) weights."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, data, generator=g).bernoulli_()
    h = torch.randn(samples, batch, hidden, generator=g).tanh_()
    weight = 0.01 * torch.randn(data, hidden, generator=g)
    bias = 0.01 * torch.randn(data, generator=g)
    return [x.to(device)] + [t.to(device).requires_grad_() for t in (h, weight, bias)]


def clear_grads(inputs: list[torch.Tensor]) -> None:
    for t in inputs[1:]:
        t.grad = None


def step(loss: Callable, inputs: list[torch.Tensor]) -> torch.Tensor:
    clear_grads(inputs)
    value = loss(*inputs)
    value.backward()
    return value


def check(inputs: list[torch.Tensor], losses: dict[str, Callable]) -> None:
    """Every provider gives the same value and gradients (before any timing)."""
    results = {}
    for name, loss in losses.items():
        value = step(loss, inputs).detach()
        results[name] = [value] + [t.grad.clone() for t in inputs[1:]]
    first = results["eager"]
    for name, got in results.items():
        for a, b in zip(got, first):
            torch.testing.assert_close(
                a,
                b,
                rtol=1e-3,
                atol=1e-3 * max(1.0, b.abs().max().item()),
                msg=lambda m: f"bench --head: {name} disagrees with eager: {m}",
            )


def _time(loss: Callable, inputs: list[torch.Tensor], iterations: int) -> float:
    cuda = inputs[0].is_cuda
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        step(loss, inputs)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations


def peak_bytes(provider: str, batch: int, samples: int, data: int, hidden: int, device: str) -> int:
    if device.startswith("cuda"):
        inputs = make_inputs(batch, samples, data, hidden, device)
        loss = make_loss(provider)
        step(loss, inputs)  # warm-up (compilation)
        clear_grads(inputs)
        return cuda_peak_bytes(lambda: step(loss, inputs))
    spec = dict(
        provider=provider, batch=batch, samples=samples, data=data, hidden=hidden, threads=torch.get_num_threads()
    )
    return peak_bytes_in_fresh_process("aevb_fast.bench.head_suite", spec)


def _measure_memory_here(spec: dict) -> int:
    map_large_allocations()
    torch.set_num_threads(spec["threads"])
    inputs = make_inputs(spec["batch"], spec["samples"], spec["data"], spec["hidden"], "cpu")
    loss = make_loss(spec["provider"])
    step(loss, inputs)  # warm-up: compilation, library buffers
    return sampled_peak_bytes(lambda: step(loss, inputs), reset=lambda: clear_grads(inputs))


def run(
    batches: list[int],
    samples: list[int],
    device: str,
    repeats: int,
    data: int = 784,
    hidden: int = 500,
    min_time: float = 0.2,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """One row per (batch, L), each handed to `on_row` as soon as it is measured."""
    rows = []
    cases = [(b, l) for b in batches for l in samples]
    for batch, samples_ in tqdm(cases, desc="bench --head", unit="case"):
        torch._dynamo.reset()
        inputs = make_inputs(batch, samples_, data, hidden, device)
        losses = {name: make_loss(name) for name in PROVIDERS}
        check(inputs, losses)
        timing = interleaved(
            {name: functools.partial(_time, loss, inputs) for name, loss in losses.items()}, repeats, min_time
        )
        del inputs
        peaks = {name: peak_bytes(name, batch, samples_, data, hidden, device) for name in PROVIDERS}
        eager_t, eager_m = timing["eager"]["median_s"], peaks["eager"]
        rows.append(
            {
                "suite": "head",
                "op": "linear_bernoulli_log_prob",
                "batch": batch,
                "samples": samples_,
                "data": data,
                "hidden": hidden,
                "device": device_name(device),
                "threads": torch.get_num_threads(),
                "repeats": repeats,  # a key field: a quick run does not replace a careful one
                "dtype": "float32",
                "timing": timing,
                "peak_bytes": peaks,
                "time_vs_eager": {p: timing[p]["median_s"] / eager_t for p in PROVIDERS},
                "memory_vs_eager": {p: peaks[p] / eager_m for p in PROVIDERS},
                "memory_vs_compiled": {p: peaks[p] / peaks["compiled"] for p in PROVIDERS},
            }
        )
        if on_row:
            on_row(rows[-1])
        # One step of each provider under the profiler, once the row is saved (a profiler that
        # takes the process down loses no figure), and saved again with it.
        inputs = make_inputs(batch, samples_, data, hidden, device)
        rows[-1]["profile"] = {
            name: time_profile(functools.partial(step, loss, inputs), inputs[0].is_cuda)
            for name, loss in losses.items()
        }
        del inputs
        if on_row:
            on_row(rows[-1])
    return rows


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'batch':>7} {'L':>2} "
        + " ".join(f"{p + ' ms':>14}" for p in PROVIDERS)
        + " "
        + " ".join(f"{p + ' MB':>14}" for p in PROVIDERS)
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        t, m = r["timing"], r["peak_bytes"]
        lines.append(
            f"{r['batch']:>7} {r['samples']:>2} "
            + " ".join(f"{t[p]['median_s'] * 1e3:>14.1f}" for p in PROVIDERS)
            + " "
            + " ".join(f"{m[p] / 1e6:>14.1f}" for p in PROVIDERS)
            + ("  noisy" if noisy(t) else "")
        )
    lines.append("time and peak memory relative to eager (lower is better):")
    for r in rows:
        lines.append(
            f"  batch {r['batch']} L={r['samples']}: "
            + ", ".join(
                f"{p} time {r['time_vs_eager'][p]:.2f}x mem {r['memory_vs_eager'][p]:.2f}x" for p in PROVIDERS[1:]
            )
            + f"; fused-sum memory vs compiled {r['memory_vs_compiled']['fused-sum']:.2f}x"
        )
    lines.append(
        "time: median step +- half its p20-p80 range: "
        + "; ".join(
            f"batch {r['batch']} L={r['samples']}: " + ", ".join(f"{p} {spread(r['timing'][p])}" for p in PROVIDERS)
            for r in rows
        )
    )
    for r in rows:
        if "profile" in r:
            lines += format_profiles(
                f"where one step's time goes (torch.profiler), batch {r['batch']} L={r['samples']}:", r["profile"]
            )
    return "\n".join(lines + noisy_mark(rows))


if __name__ == "__main__":
    measure_memory_main(_measure_memory_here, "aevb-fast bench --head")
