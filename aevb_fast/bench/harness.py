"""The one timing harness of the benchmark suites (op_suite and train_step): warm-up, calibration,
providers interleaved round by round, medians with their 20th and 80th percentiles, and results
files whose rows are upserted by key (a re-run replaces its rows instead of appending copies)."""

from __future__ import annotations

import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

# measure(iterations) -> seconds per iteration, for one provider of one case.
Measure = Callable[[int], float]


class Clock:
    """Accumulates the time of timed sections: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, cuda: bool):
        self.cuda, self.seconds, self.events = cuda, 0.0, []
        if cuda:
            torch.cuda.synchronize()

    def start(self):
        if self.cuda:
            self.events.append(torch.cuda.Event(enable_timing=True))
            self.events[-1].record()
        else:
            self.t0 = time.perf_counter()

    def stop(self):
        if self.cuda:
            self.events.append(torch.cuda.Event(enable_timing=True))
            self.events[-1].record()
        else:
            self.seconds += time.perf_counter() - self.t0

    def total(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            pairs = zip(self.events[::2], self.events[1::2])
            return sum(a.elapsed_time(b) for a, b in pairs) / 1e3
        return self.seconds


def timing_summary(times: list[float]) -> dict[str, float]:
    """Median and the 20th and 80th percentiles of repeated timings (seconds)."""
    q = statistics.quantiles(times, n=5) if len(times) > 1 else [times[0]] * 4
    return {"median_s": statistics.median(times), "p20_s": q[0], "p80_s": q[3], "runs": len(times)}


def interleaved(measures: dict[str, Measure], repeats: int, min_time: float) -> dict[str, dict[str, float]]:
    """Times every provider `repeats` times, round by round so that drift on a shared machine hits
    them alike: two warm-up iterations each (compilation happens there), then as many iterations
    per measurement as make the slowest provider's last `min_time` seconds."""
    for measure in measures.values():
        measure(2)
    slowest = max(measure(1) for measure in measures.values())
    iterations = max(1, int(min_time / max(slowest, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            times[name].append(measure(iterations))
    return {name: timing_summary(t) for name, t in times.items()}


def time_profile(run_once: Callable[[], object], cuda: bool, top: int = 8) -> dict:
    """Where one call of ``run_once`` spends its time, from torch.profiler: on a GPU its kernels by
    device time, on the CPU its operators by self time (the GPU figures of a suite say how long;
    this says which kernel). ``{"total_ms", "top": [{"name", "calls", "ms"}, ...]}`` with the
    ``top`` largest, or ``{"error": why}`` where the profiler cannot run (some sandboxes refuse
    the GPU's tracing)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU
    if cuda:
        torch.cuda.synchronize()
    prof = profile(activities=[activity])
    try:
        prof.start()
    except Exception as error:  # the profiler's failure must not lose the suite's figures
        return {"error": f"{type(error).__name__}: {error}"[:300]}
    try:
        run_once()  # its own errors are the suite's: they propagate
        if cuda:
            torch.cuda.synchronize()
    finally:
        try:
            prof.stop()
            averages = prof.key_averages()
        except Exception as error:
            averages = error
    if isinstance(averages, Exception):
        return {"error": f"{type(averages).__name__}: {averages}"[:300]}
    events = []
    for e in averages:
        if cuda and e.device_type != DeviceType.CUDA:
            continue
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us > 0:
            events.append({"name": e.key[:120], "calls": e.count, "ms": round(us / 1e3, 4)})
    if not events:
        return {"error": "the profiler recorded no " + ("kernels" if cuda else "operators")}
    events.sort(key=lambda e: -e["ms"])
    return {"total_ms": round(sum(e["ms"] for e in events), 4), "top": events[:top]}


def format_profiles(title: str, profiles: dict[str, dict], width: int = 70) -> list[str]:
    """Lines of a table of time_profile results, one block per provider."""
    lines = [title]
    for provider, p in profiles.items():
        if "error" in p:
            lines.append(f"  {provider}: no profile ({p['error']})")
            continue
        lines.append(f"  {provider}: {p['total_ms']:.3f} ms in all")
        for e in p["top"]:
            name = e["name"] if len(e["name"]) <= width else e["name"][: width - 3] + "..."
            lines.append(f"    {e['ms']:>9.3f} ms {e['calls']:>5}x  {name}")
    return lines


def spread(summary: dict[str, float]) -> str:
    """'1.234ms +-3%': the median and half the p20-p80 range relative to it; '1.234ms (1 run)'
    where one timing has no spread to show (not +-0%)."""
    if summary.get("runs") == 1:  # rows saved before 2026-12-05 lack the count
        return f"{summary['median_s'] * 1e3:.3f}ms (1 run)"
    half = (summary["p80_s"] - summary["p20_s"]) / 2 / summary["median_s"]
    return f"{summary['median_s'] * 1e3:.3f}ms +-{100 * half:.0f}%"


# A timing whose 80th percentile is this many times its 20th is too noisy to quote.
NOISY_SPREAD = 1.5
NOISY_NOTE = f"noisy: p80/p20 > {NOISY_SPREAD:g} for some provider; rerun on a quiet machine"


def noisy(timing: dict[str, dict[str, float]]) -> bool:
    """Whether any provider's timing of one case spreads too widely to trust its ratios."""
    return any(t["p80_s"] > NOISY_SPREAD * t["p20_s"] for t in timing.values())


OVERSUBSCRIBED_NOTE = (
    "oversubscribed: before the case, a (100, 784) add took many times longer on these "
    "threads than on one (aevb_fast.threads.probe): other jobs share the cores; rerun on a "
    "quiet machine, with --threads 1, or with OMP_WAIT_POLICY=PASSIVE"
)


def oversubscribed(row: dict) -> bool:
    """Whether the thread probe taken before a CPU row's case found the threads oversubscribed."""
    return bool(row.get("probe", {}).get("oversubscribed"))


def row_marks(row: dict) -> str:
    """'  noisy', '  oversubscribed', both or nothing: what a table row says after its figures."""
    return ("  noisy" if noisy(row["timing"]) else "") + ("  oversubscribed" if oversubscribed(row) else "")


def noisy_mark(rows: list[dict]) -> list[str]:
    """The table's footnotes when some rows are marked ``noisy`` or ``oversubscribed``."""
    return ([f"rows marked 'noisy': {NOISY_NOTE}"] if any(noisy(r["timing"]) for r in rows) else []) + (
        [f"rows marked {OVERSUBSCRIBED_NOTE}"] if any(oversubscribed(r) for r in rows) else []
    )


# The fields that identify a result: a row saved again with the same values replaces the old one.
KEY_FIELDS = (
    "suite",
    "op",
    "mode",
    "batch",
    "samples",
    "shape",
    "dtype",
    "matmul",
    "hidden",
    "latent",
    "device",
    "threads",
    "repeats",  # a quick --repeats 1 run sits beside a median of 11, never replaces it
    "torch",
    "aevb_fast",
    "cpu_isa",
    "cpu_allocator",
)


def row_key(row: dict) -> str:
    return json.dumps([row.get(field) for field in KEY_FIELDS])


def read_rows(path: Path) -> list[dict]:
    """The rows of a results file ([] when it does not exist); ValueError naming the line when it
    holds a line that is not a row."""
    rows = []
    if path.exists():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(
                    f"{path}:{number}: not a results row (JSON lines expected); move the file away or pass --out"
                ) from None
    return rows


def upsert(rows: list[dict], path: Path) -> tuple[int, int]:
    """Writes the rows, stamped with versions and date, into a JSON-lines file: a row with the
    key of an existing one replaces it, others are added. The file is replaced atomically, and
    left as it was if it holds a line that is not a row (ValueError). Returns (rows replaced,
    rows added)."""
    from .. import build_info

    info = build_info()
    stamp = {
        "torch": torch.__version__,
        "aevb_fast": info["version"],
        "cpu_isa": info["cpu_isa"],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    new = {}
    for r in rows:
        stamped = {**r, **stamp}
        new[row_key(stamped)] = stamped
    old = read_rows(path)
    kept = [r for r in old if row_key(r) not in new]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        for r in kept + list(new.values()):
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)
    return len(old) - len(kept), len(new) - (len(old) - len(kept))
