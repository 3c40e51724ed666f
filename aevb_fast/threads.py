"""Torch's intra-op threads on a busy CPU: a probe that sees oversubscription, and the choice the
``aevb-fast`` commands make from it.

On a machine whose cores are shared with other jobs, every parallel op waits at its barrier for a
thread that the OS has descheduled: measured on 2 cores with one busy neighbour, a (100, 784) add
took 8 ms with 2 threads against 0.02 ms with 1, and whole training steps were 10-40x slower
(issue 32). A single thread never waits for another. The probe times that tiny add with the
current thread count and with one; when the first is many times the second, the threads are
oversubscribed. Our kernels use torch's thread pool (``at::parallel_for``), so they follow the
same setting.
"""

from __future__ import annotations

import statistics
import time

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


def choose_threads(requested: int, command: str, say=print) -> int:
    """The intra-op thread count for a command: ``requested`` if > 0; else torch's default,
    unless the probe finds it oversubscribed, then 1 (with a one-line notice naming ``--threads``).
    Sets it and returns it."""
    if requested > 0:
        torch.set_num_threads(requested)
        return requested
    threads = torch.get_num_threads()
    if threads > 1:
        result = probe(threads)
        if result["oversubscribed"]:
            torch.set_num_threads(1)
            say(f"{command}: this CPU is busy ({describe(result)}): using 1 thread; "
                f"--threads {threads} to use {threads} anyway")
            return 1
    return threads
