"""The op benchmark: each op forward, backward or forward+backward, fused (``aevb_fast``) against
the eager reference (``eager``, reference.py) and ``torch.compile(reference)`` (``compiled``),
timed side by side in one run. Results are ratios measured in the same process, interleaved so
that machine drift hits every provider alike. Memory: the bytes autograd saves for the backward
pass (every device) and the peak memory of a forward+backward (CUDA)."""

from __future__ import annotations

import ctypes
import functools
import math
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .. import ops, reference, threads
from .harness import Clock, interleaved, noisy_mark, row_marks, spread

PROVIDERS = ("aevb_fast", "eager", "compiled")
MODES = ("forward", "backward", "forward+backward")


class Tensors:
    """Makes one case's tensors from a seeded generator: `param()` a (B, W) leaf that gets a
    gradient, `data()` a (B, W) input in [0, 1) that does not, `per_sample()` an (L, B, W)
    output gradient and `per_row()` a (B,) output gradient in the accumulate dtype."""

    def __init__(self, batch: int, width: int, samples: int, dtype: torch.dtype, device: str):
        self.shape, self.samples, self.dtype, self.device = (batch, width), samples, dtype, device
        self.generator = torch.Generator().manual_seed(0)

    def _make(self, shape, dtype, draw=torch.randn) -> torch.Tensor:
        return draw(shape, generator=self.generator).to(dtype=dtype, device=self.device)

    def param(self) -> torch.Tensor:
        return self._make(self.shape, self.dtype).requires_grad_()

    def data(self) -> torch.Tensor:
        return self._make(self.shape, self.dtype, torch.rand)

    def per_sample(self) -> torch.Tensor:
        return self._make((self.samples, *self.shape), self.dtype)

    def per_row(self) -> torch.Tensor:
        return self._make(self.shape[:1], ops.accumulate_dtype(self.dtype))

    def one(self) -> torch.Tensor:
        """The output gradient of a summed loss's loss.backward()."""
        return torch.ones((), dtype=ops.accumulate_dtype(self.dtype), device=self.device)

    def map_shape(self) -> tuple[int, ...]:
        """A hierarchical VAE's latent map (B, C, H, W) of W = C * H * W elements: (B, 16, S, S)
        when W = 16 S^2 (4096: a VDVAE 16x16 layer), else (B, W, 1, 1)."""
        batch, width = self.shape
        side = math.isqrt(width // 16)
        return (batch, 16, side, side) if 16 * side * side == width else (batch, width, 1, 1)

    def param_map(self) -> torch.Tensor:
        return self._make(self.map_shape(), self.dtype).requires_grad_()

    def per_sample_map(self) -> torch.Tensor:
        return self._make((self.samples, *self.map_shape()), self.dtype)


@dataclass(frozen=True)
class Sizes:
    """Bytes of one (B, W) tensor (`n`), of one (B,) accumulated result (`rows`) and of one
    (L, B, W) sample (`z`)."""

    n: int
    rows: int
    z: int


@dataclass(frozen=True)
class BenchedOp:
    """One op as the benchmark sees it, described once: its inputs and output gradients, the
    least bytes a fused forward and backward must move (every input read once, every output
    written once, noise regenerated and never stored), and whether it draws z (then it takes
    L, and its check compares the noise's statistics instead of values)."""

    name: str
    width: str  # "latent": tensors are (B, J); "data": (B, D)
    inputs: Callable[[Tensors], list[torch.Tensor]]
    grads: Callable[[Tensors], list[torch.Tensor]]
    bytes_moved: Callable[[Sizes], tuple[int, int]]
    draws_z: bool = False
    function: str = ""  # the function of ops and reference it runs (default: its name)
    event_dims: int | None = None  # passed when given
    reduction: str | None = None  # passed when given

    def providers(self, samples: int = 1) -> dict[str, Callable]:
        fused, eager = getattr(ops, self.function or self.name), getattr(reference, self.function or self.name)
        options = {k: v for k, v in (("event_dims", self.event_dims), ("reduction", self.reduction)) if v is not None}
        if options:
            fused = functools.partial(fused, **options)
            eager = functools.partial(eager, **options)
        if self.draws_z:  # z of shape (L, B, J), like the case's grad_z
            fused = functools.partial(fused, num_samples=samples)
            eager = functools.partial(eager, num_samples=samples)
        compiled = torch.compile(lambda *a: eager(*a), dynamic=False)
        return {
            "aevb_fast": _forward_backward(fused),
            "eager": _forward_backward(eager),
            "compiled": _forward_backward(compiled),
        }


BENCHED_OPS = {
    op.name: op
    for op in (
        BenchedOp(
            "reparameterize",
            "latent",
            draws_z=True,
            inputs=lambda t: [t.param(), t.param()],  # mu, logvar
            grads=lambda t: [t.per_sample()],
            # read mu, logvar, write z | read grad_z, logvar, write grad_mu, grad_logvar
            bytes_moved=lambda s: (2 * s.n + s.z, s.z + 3 * s.n),
        ),
        BenchedOp(
            "gaussian_kl",
            "latent",
            inputs=lambda t: [t.param(), t.param()],
            grads=lambda t: [t.per_row()],
            # read mu, logvar, write kl | read grad_kl, mu, logvar, write grad_mu, grad_logvar
            bytes_moved=lambda s: (2 * s.n + s.rows, s.rows + 4 * s.n),
        ),
        BenchedOp(
            "sample_and_kl",
            "latent",
            draws_z=True,
            inputs=lambda t: [t.param(), t.param()],
            grads=lambda t: [t.per_sample(), t.per_row()],
            bytes_moved=lambda s: (2 * s.n + s.z + s.rows, s.z + s.rows + 4 * s.n),
        ),
        BenchedOp(
            "bernoulli_log_prob",
            "data",
            inputs=lambda t: [t.data(), t.param()],  # x, logits
            grads=lambda t: [t.per_row()],
            # read x, logits, write ll | read grad_ll, x, logits, write grad_logits
            bytes_moved=lambda s: (2 * s.n + s.rows, 3 * s.n + s.rows),
        ),
        BenchedOp(
            "gaussian_log_prob",
            "data",
            inputs=lambda t: [t.data(), t.param(), t.param()],  # x, mean, logvar
            grads=lambda t: [t.per_row()],
            bytes_moved=lambda s: (3 * s.n + s.rows, 5 * s.n + s.rows),
        ),
        # The likelihoods as an ELBO uses them: summed over the batch, loss.backward() (an output
        # gradient of 1). The least a fused pass moves: read x and the parameters, write their
        # gradients, in the forward; nothing in the backward.
        BenchedOp(
            "bernoulli_log_prob_sum",
            "data",
            function="bernoulli_log_prob",
            reduction="sum",
            inputs=lambda t: [t.data(), t.param()],
            grads=lambda t: [t.one()],
            bytes_moved=lambda s: (3 * s.n, 0),
        ),
        BenchedOp(
            "gaussian_log_prob_sum",
            "data",
            function="gaussian_log_prob",
            reduction="sum",
            inputs=lambda t: [t.data(), t.param(), t.param()],
            grads=lambda t: [t.one()],
            bytes_moved=lambda s: (5 * s.n, 0),
        ),
        # A hierarchical VAE's layer: (B, C, H, W) latents, the KL to a learned prior summed over
        # (C, H, W); the eager baseline is VDVAE's formula (reference.py).
        BenchedOp(
            "kl_to_prior",
            "latent",
            function="gaussian_kl",
            event_dims=3,
            inputs=lambda t: [t.param_map() for _ in range(4)],  # mu, logvar, prior_mu, prior_logvar
            grads=lambda t: [t.per_row()],
            # read the 4 parameters, write kl | read grad_kl and the 4, write their 4 gradients
            bytes_moved=lambda s: (4 * s.n + s.rows, s.rows + 8 * s.n),
        ),
        BenchedOp(
            "sample_and_kl_to_prior",
            "latent",
            draws_z=True,
            function="sample_and_kl",
            event_dims=3,
            inputs=lambda t: [t.param_map() for _ in range(4)],
            grads=lambda t: [t.per_sample_map(), t.per_row()],
            bytes_moved=lambda s: (4 * s.n + s.z + s.rows, s.z + s.rows + 8 * s.n),
        ),
    )
}
OPS = tuple(BENCHED_OPS)
SAMPLING_OPS = tuple(name for name, op in BENCHED_OPS.items() if op.draws_z)
# What `aevb-fast bench` times by default: every public function of the op families (read from
# aevb_fast.ops.FAMILIES) that this suite times; the linear heads have their own suite (--head),
# the KL to a learned prior and the summed likelihoods run when named.
DEFAULT_OPS = tuple(op for family in ops.FAMILIES for op in family.ops if op in BENCHED_OPS)


@dataclass
class Case:
    op: str
    batch: int
    samples: int  # L (1 for the ops that draw no sample)
    inputs: list[torch.Tensor]  # leaves; the float ones that require grad get gradients
    grads: list[torch.Tensor]  # output gradients (random, not ones)
    uses_noise: bool
    bytes_moved: tuple[int, int]  # the least a fused forward, and a backward, must read and write


def bytes_moved(op: str, batch: int, width: int, element: int, accumulate: int, samples: int = 1) -> tuple[int, int]:
    """(forward, backward) bytes of `op` on (batch, width) tensors of `element` bytes each, with
    results of `accumulate` bytes per row and L = `samples`."""
    n = batch * width * element
    return BENCHED_OPS[op].bytes_moved(Sizes(n=n, rows=batch * accumulate, z=samples * n))


def mode_bytes(case: Case, mode: str) -> int:
    forward, backward = case.bytes_moved
    return {"forward": forward, "backward": backward, "forward+backward": forward + backward}[mode]


def case_width(op: str, data: int, latent: int) -> int:
    return latent if BENCHED_OPS[op].width == "latent" else data


def make_case(op: str, batch: int, data: int, latent: int, dtype: torch.dtype, device: str, samples: int = 1) -> Case:
    spec = BENCHED_OPS[op]
    samples = samples if spec.draws_z else 1
    width = case_width(op, data, latent)
    tensors = Tensors(batch, width, samples, dtype, device)
    inputs, grads = spec.inputs(tensors), spec.grads(tensors)
    return Case(
        op,
        batch,
        samples,
        inputs,
        grads,
        spec.draws_z,
        bytes_moved(op, batch, width, dtype.itemsize, ops.accumulate_dtype(dtype).itemsize, samples),
    )


def _outputs(fn: Callable, case: Case) -> list[torch.Tensor]:
    out = fn(*case.inputs)
    return list(out) if isinstance(out, tuple) else [out]


def _forward_backward(fn: Callable) -> Callable:
    def step(case: Case):
        outs = _outputs(fn, case)
        torch.autograd.backward(outs, case.grads)
        return outs

    step.forward = fn
    return step


def providers_for(op: str, samples: int = 1) -> dict[str, Callable]:
    return BENCHED_OPS[op].providers(samples)


def saved_bytes(step: Callable, case: Case) -> int:
    """Bytes of the distinct storages autograd saves for the backward pass of one forward."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _outputs(step.forward, case)
    return sum(storages.values())


def peak_cuda_bytes(step: Callable, case: Case) -> int:
    """Peak memory of one forward+backward above what was allocated before it."""
    for t in case.inputs:
        t.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(case)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _noise_is_standard_normal(z: torch.Tensor, case: Case) -> bool:
    """The noise behind z, (z - mu) / sigma, has mean 0 and standard deviation 1 within five
    standard errors (plus the rounding of a low-precision z): a sample that could only fail by
    chance once in millions of runs."""
    mu, logvar = (t.detach().double() for t in case.inputs[:2])
    eps = (z.double() - mu) / torch.exp(0.5 * logvar)
    n = eps.numel()
    slack = 0.0 if case.inputs[0].dtype in (torch.float32, torch.float64) else 0.02
    return (
        abs(eps.mean().item()) < 5 / math.sqrt(n) + slack and abs(eps.std().item() - 1) < 5 / math.sqrt(2 * n) + slack
    )


def _check(case: Case, step_by_provider: dict[str, Callable]) -> None:
    """A wrong kernel never gets a time: every provider's outputs and gradients must match the
    reference's (for the ops that draw noise, the noise-free output: the KL, or the sample's
    mean and spread)."""
    results = {}
    for name, step in step_by_provider.items():
        for t in case.inputs:
            t.grad = None
        outs = [o.detach().float() for o in step(case)]
        grads = [t.grad.float() for t in case.inputs if t.grad is not None]
        results[name] = (outs, grads)
    ref_outs, ref_grads = results["eager"]
    for name, (outs, grads) in results.items():
        if case.uses_noise:
            ok = _noise_is_standard_normal(outs[0], case)
            pairs = list(zip(outs[1:], ref_outs[1:])) + list(zip(grads[:1], ref_grads[:1]))
        else:
            ok, pairs = True, list(zip(outs, ref_outs)) + list(zip(grads, ref_grads))
        for a, b in pairs:
            ok = ok and torch.allclose(a, b, rtol=2e-2, atol=2e-2 * max(1.0, b.abs().max().item()))
        if not ok:
            raise RuntimeError(
                f"bench: {name} gives wrong results for {case.op} at batch {case.batch}, "
                f"L={case.samples}, {case.inputs[0].dtype}"
            )
    for t in case.inputs:
        t.grad = None


def _time(step: Callable, case: Case, iterations: int, mode: str = "forward+backward") -> float:
    """Seconds per call of the mode's part of a training step (the rest runs untimed)."""
    clock = Clock(case.inputs[0].is_cuda)
    for _ in range(iterations):
        for t in case.inputs:
            t.grad = None
        if mode == "forward":
            clock.start()
            _outputs(step.forward, case)
            clock.stop()
        elif mode == "backward":
            outs = _outputs(step.forward, case)
            clock.start()
            torch.autograd.backward(outs, case.grads)
            clock.stop()
        else:
            clock.start()
            step(case)
            clock.stop()
    return clock.total() / iterations


class CopyYardstick:
    """The machine's memory bandwidth, timed just before each case (so that a shared machine's
    drift during a run moves it with the case): a device-to-device copy of `megabytes`, bytes read
    plus bytes written over the median of `repeats` copies. It is not timed between the providers'
    rounds: a copy flushes the caches, and the provider after it would start cold where the
    others start warm."""

    def __init__(self, device: str, megabytes: int = 256):
        self.src = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device).uniform_()
        self.dst = torch.empty_like(self.src)

    def gbps(self, repeats: int = 7) -> float:
        times = []
        for _ in range(repeats + 1):
            clock = Clock(self.src.is_cuda)
            clock.start()
            self.dst.copy_(self.src)
            clock.stop()
            times.append(clock.total())
        return 2 * self.src.nbytes / statistics.median(times[1:]) / 1e9


def bench_case(
    case: Case, steps: dict[str, Callable], repeats: int, min_time: float, mode: str = "forward+backward"
) -> dict:
    _check(case, steps)
    measures = {name: functools.partial(_time, step, case, mode=mode) for name, step in steps.items()}
    return interleaved(measures, repeats, min_time)


def keep_freed_memory() -> bool:
    """Makes glibc keep freed memory for reuse instead of returning it to the kernel, as a
    caching allocator does on a GPU. By default every allocation over 32 MB is a fresh mmap and
    its first touch page-faults (zeroing ~50k pages for a 65536 x 784 float32 tensor); at the
    large sizes that costs every provider more than its arithmetic. Returns whether it applied."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def default_dtypes(device: str) -> list[torch.dtype]:
    return [torch.float32, torch.bfloat16] + ([torch.float16] if device.startswith("cuda") else [])


def run(
    ops_: list[str],
    batches: list[int],
    data: int,
    latent: int,
    dtypes: list[torch.dtype],
    device: str,
    repeats: int,
    min_time: float,
    modes: tuple[str, ...] = ("forward+backward",),
    samples: tuple[int, ...] = (1,),
    allocator: str = "glibc default",
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Every (op, L, dtype, batch, mode) case, providers interleaved within each case. `samples`
    applies to the ops that draw z; the others run once with L = 1. `on_row` gets each row as
    soon as it is measured (so a run cut short keeps what it measured)."""
    rows = []
    yardstick = CopyYardstick(device)
    cases = [
        (op, L, dtype, b, m)
        for op in ops_
        for L in (samples if op in SAMPLING_OPS else (1,))
        for dtype in dtypes
        for b in batches
        for m in modes
    ]
    steps = {(op, L): providers_for(op, L) for op, L, *_ in cases}
    for op, L, dtype, batch, mode in tqdm(cases, desc="bench", unit="case"):
        case = make_case(op, batch, data, latent, dtype, device, L)
        # Every compiled provider shares one code object, and dynamo stops compiling a code
        # object after a few recompilations (then runs it eagerly): start each case afresh.
        torch._dynamo.reset()
        providers = steps[(op, L)]
        bandwidth = yardstick.gbps()
        probe = None if device.startswith("cuda") else threads.probe()
        timing = bench_case(case, providers, repeats, min_time, mode)
        memory = {name: {"saved_bytes": saved_bytes(step, case)} for name, step in providers.items()}
        if device.startswith("cuda"):
            for name, step in providers.items():
                memory[name]["peak_bytes"] = peak_cuda_bytes(step, case)
        width = case_width(op, data, latent)
        rows.append(
            {
                "suite": "ops",
                "op": op,
                "mode": mode,
                "batch": batch,
                "samples": L,
                "memory": memory,
                "shape": [batch, width],
                "dtype": str(dtype).removeprefix("torch."),
                "device": device_name(device),
                "threads": torch.get_num_threads(),
                "repeats": repeats,
                "min_time": min_time,
                "timing": timing,
                "speedup_vs_eager": timing["eager"]["median_s"] / timing["aevb_fast"]["median_s"],
                "speedup_vs_compiled": timing["compiled"]["median_s"] / timing["aevb_fast"]["median_s"],
                "bytes_moved": mode_bytes(case, mode),
                "gbps": mode_bytes(case, mode) / timing["aevb_fast"]["median_s"] / 1e9,
                "copy_gbps": bandwidth,
                "cpu_allocator": None if device.startswith("cuda") else allocator,
                **({"probe": probe} if probe else {}),
            }
        )
        rows[-1]["bandwidth_share"] = rows[-1]["gbps"] / bandwidth
        # Streaming time: the op's bytes at the copy bandwidth; the op's time as a multiple of it.
        # (None where the op need move nothing: the summed likelihoods' backward.)
        streaming_s = mode_bytes(case, mode) / (bandwidth * 1e9)
        rows[-1]["times_streaming"] = timing["aevb_fast"]["median_s"] / streaming_s if streaming_s else None
        del case
        if on_row:
            on_row(rows[-1])
    return rows


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def results_path(device: str, root: Path = Path("benchmarks/results")) -> Path:
    """benchmarks/results/<device name>/ops.jsonl, the name made safe for a folder."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in device_name(device)).strip("-")
    return root / safe / "ops.jsonl"


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'op':<22} {'L':>2} {'dtype':<9} {'mode':<17} {'batch':>8} {'aevb_fast':>17} {'eager':>17} {'compiled':>17} "
        f"{'vs eager':>9} {'vs compiled':>12} {'GB/s':>7} {'of copy':>8} {'saved MiB':>9} {'eager MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        t, m = r["timing"], r["memory"]
        lines.append(
            f"{r['op']:<22} {r.get('samples', 1):>2} {r['dtype']:<9} {r['mode']:<17} {r['batch']:>8} "
            + " ".join(f"{spread(t[p]):>17}" for p in PROVIDERS)  # "12.345ms (1 run)" fits
            + " "
            f"{r['speedup_vs_eager']:>8.2f}x {r['speedup_vs_compiled']:>11.2f}x "
            f"{r['gbps']:>7.1f} {100 * r['bandwidth_share']:>7.0f}% "
            f"{m['aevb_fast']['saved_bytes'] / 2**20:>9.2f} {m['eager']['saved_bytes'] / 2**20:>9.2f}" + row_marks(r)
        )
    if rows:
        lines.append("times: median +- half the p20-p80 range, relative to the median")
        copy = sorted(r["copy_gbps"] for r in rows)
        lines.append(
            f"copy bandwidth, timed before each case: {copy[0]:.1f}"
            + (f"-{copy[-1]:.1f}" if copy[-1] > copy[0] + 0.05 else "")
            + " GB/s; 'of copy' is each row's own"
        )
    return "\n".join(lines + noisy_mark(rows))
