"""Torch's intra-op threads on a busy CPU: what other jobs leave free, and the choice the
``aevb-fast`` commands make from it.

On a machine whose cores are shared with other jobs, a parallel op waits at its barrier for a
thread that the OS has set aside. Measured on 2 cores (``benchmarks/busy_neighbour.py``): beside
one job that keeps a core busy, a training step with torch's 2 threads took 1.5-1.6x as long as
with 1 thread; with both cores busy, a (100, 784) add took 8-12 ms with 2 threads against 0.02 ms
with 1 and a small op 80x its time. A thread count no larger than the cores
left idle never waits so. Our kernels use torch's thread pool (``at::parallel_for``), so they follow
the same setting.

Two measures, both cheap: the cores that other jobs left idle over a short window
(``/proc/stat``, Linux), and a probe that times the tiny add at n threads and at one (any
system: it catches a fully oversubscribed CPU).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

import torch

# A tiny op that torch still splits between threads (78,400 elements > its grain of 32,768).
PROBE_SHAPE = (100, 784)
# Oversubscribed: the tiny op at n threads takes this many times its time at 1 thread, and at
# least PROBE_FLOOR_S (below that, a slow n-thread start is not worth a thread).
OVERSUBSCRIBED_RATIO = 5.0
PROBE_FLOOR_S = 2e-4


def _median_time(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.add(a, b)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def probe(threads: int | None = None, repeats: int = 15) -> dict:
    """Times a (100, 784) add at ``threads`` (default: torch's current count) and at 1 thread,
    interleaved, and says whether the threads are oversubscribed. Restores the thread count.
    About 30 ms on a quiet machine, at most ~0.5 s on a busy one."""
    current = torch.get_num_threads()
    threads = threads or current
    a, b = torch.rand(PROBE_SHAPE), torch.rand(PROBE_SHAPE)
    many, one = [], []
    try:
        for _ in range(3):  # rounds, so that a burst of load hits both alike
            torch.set_num_threads(threads)
            many.append(_median_time(a, b, repeats))
            torch.set_num_threads(1)
            one.append(_median_time(a, b, repeats))
    finally:
        torch.set_num_threads(current)
    many_s, one_s = statistics.median(many), statistics.median(one)
    return {
        "threads": threads,
        "tiny_op_s": many_s,
        "one_thread_s": one_s,
        "oversubscribed": threads > 1 and many_s > max(OVERSUBSCRIBED_RATIO * one_s, PROBE_FLOOR_S),
    }


def describe(result: dict) -> str:
    """'a (100, 784) add took 8.01 ms on 2 threads, 0.017 ms on 1'."""
    return (f"a {PROBE_SHAPE} add took {result['tiny_op_s'] * 1e3:.3g} ms on {result['threads']} threads, "
            f"{result['one_thread_s'] * 1e3:.2g} ms on 1")


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _cpu_times(cpus: set[int] | None) -> tuple[int, int, int] | None:
    """(busy, total) jiffies summed over the CPUs this process may run on (every CPU when
    ``cpus`` is None), and their number, from /proc/stat; None where it is not readable."""
    try:
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu") and line[3:4].isdigit()]
        busy = total = count = 0
        for fields in lines:
            if cpus is not None and int(fields[0][3:]) not in cpus:
                continue
            times = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
            busy, total, count = busy + sum(times) - times[3] - times[4], total + sum(times), count + 1
    except (OSError, ValueError, IndexError):
        return None
    return (busy, total, count) if count else None


def idle_cpus(window: float = 0.25) -> float | None:
    """How many of the CPUs this process may run on other work left idle over ``window`` seconds
    (this process sleeps meanwhile); None where /proc/stat is not readable."""
    cpus = _allowed_cpus()
    before = _cpu_times(cpus)
    if before is None:
        return None
    time.sleep(window)
    after = _cpu_times(cpus)
    if after is None or after[1] <= before[1]:
        return None
    return after[2] * (1 - (after[0] - before[0]) / (after[1] - before[1]))


def cgroup_cpus() -> int | None:
    """The CPUs a cgroup quota allows this process (``docker --cpus 2``), rounded up; None if none."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]  # cgroup v2
    except (OSError, ValueError):
        try:  # cgroup v1
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 and period_us > 0 else None


def choose_threads(requested: int, command: str, say=print) -> int:
    """The intra-op thread count for a command: ``requested`` if > 0; else torch's default, cut
    to a cgroup's CPU quota, to the CPUs that other jobs leave idle (at least 1), or to 1 when
    the probe finds the threads oversubscribed; a cut is said in one line that names
    ``--threads``. Sets it and returns it."""
    if requested > 0:
        cpus = _allowed_count(requested)
        if requested > cpus:
            say(f"{command}: --threads {requested} is more than the {cpus} CPUs this process may use: every "
                "parallel op will wait for threads the OS cannot run at once (slower, not faster)")
        torch.set_num_threads(requested)
        return requested
    threads = torch.get_num_threads()
    chosen, why = threads, ""
    quota = cgroup_cpus()
    if quota is not None and quota < chosen:
        chosen, why = quota, f"its cgroup allows {quota} CPUs"
    idle = idle_cpus() if chosen > 1 else None
    if idle is not None and int(idle + 0.5) < chosen:
        chosen = max(1, int(idle + 0.5))
        why = f"other jobs keep {_allowed_count(threads) - idle:.1f} of the CPUs it may use busy"
    if chosen > 1:
        result = probe(chosen)
        if result["oversubscribed"]:
            chosen, why = 1, describe(result)
    if chosen < threads:
        torch.set_num_threads(chosen)
        say(f"{command}: this CPU is busy ({why}): using {chosen} thread{'s' * (chosen > 1)} of {threads}; "
            f"--threads {threads} to use {threads} anyway")
    return chosen


def _allowed_count(default: int) -> int:
    cpus = _allowed_cpus()
    return len(cpus) if cpus else default
