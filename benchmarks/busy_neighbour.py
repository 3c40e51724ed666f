"""What busy neighbours cost on a shared CPU: torch's threads beside 0, 1 and 2 other jobs.

    python benchmarks/busy_neighbour.py            # about 2 minutes on 2 cores; nothing else running

Each configuration runs in a fresh process (OpenMP reads its environment when torch loads):
torch's default thread count, 1 thread, the default count with ``OMP_WAIT_POLICY=PASSIVE``
(threads sleep at a barrier instead of spinning), and what the ``aevb-fast`` commands choose
(``aevb_fast.threads.choose_threads``). Each is timed on a quiet machine and beside 1 and 2
neighbour processes that each keep a core busy (a Python loop). The measures: a (100, 784) add (the
probe of ``aevb_fast.threads``), ``bernoulli_log_prob`` forward and backward at B = 100 and 4096
(D = 784), and a training step of the paper's MNIST model (784-500-20, the fused ELBO, Adagrad)
at M = 100 and 4096. Medians of repeated timings, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {  # name: (threads: 0 torch's default, -1 what aevb-fast chooses; extra environment)
    "torch's default": (0, {}),
    "1 thread": (1, {}),
    "OMP_WAIT_POLICY=PASSIVE": (0, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "aevb-fast's choice": (-1, {}),
}
NEIGHBOURS = (0, 1, 2)
NEIGHBOUR = [sys.executable, "-c", "while True: pass"]


def median_ms(fn, min_time: float = 0.3, repeats: int = 7) -> float:
    fn()
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.05:
        fn()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    iterations = max(1, int(min_time / repeats / per_call))
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(iterations):
            fn()
        times.append((time.perf_counter() - began) / iterations)
    return 1e3 * statistics.median(times)


def child(threads: int) -> dict:
    import torch

    import aevb_fast as af
    from aevb_fast.models import VAE

    if threads > 0:
        torch.set_num_threads(threads)
    elif threads < 0:
        from aevb_fast.threads import choose_threads

        choose_threads(0, "busy_neighbour", say=lambda message: print(message, file=sys.stderr))
    torch.manual_seed(0)
    results = {"threads": torch.get_num_threads()}
    a, b = torch.rand(100, 784), torch.rand(100, 784)
    results["add (100, 784)"] = median_ms(lambda: torch.add(a, b))
    for batch in (100, 4096):
        x = torch.rand(batch, 784).bernoulli()
        logits = torch.randn(batch, 784, requires_grad=True)
        results[f"bernoulli_log_prob fwd+bwd, B = {batch}"] = median_ms(
            lambda: af.bernoulli_log_prob(x, logits).sum().backward())
    for batch in (100, 4096):
        model = VAE.paper(data_dim=784, hidden=500, latent=20)
        optimizer = torch.optim.Adagrad(model.parameters(), lr=0.02)
        x = torch.rand(batch, 784).bernoulli()

        def step():
            optimizer.zero_grad()
            (-model(x)).backward()
            optimizer.step()

        results[f"training step, M = {batch}"] = median_ms(step)
    return results


def run_config(name: str, neighbours: int) -> dict:
    threads, env = CONFIGS[name]
    busy = [subprocess.Popen(NEIGHBOUR) for _ in range(neighbours)]
    try:
        time.sleep(0.5 if busy else 0)  # the neighbours running before the measurement starts
        out = subprocess.run([sys.executable, __file__, "--child", str(threads)], env={**os.environ, **env},
                             check=True, capture_output=True, text=True).stdout
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return json.loads(out.strip().splitlines()[-1])


def markdown(results: dict) -> str:
    measures = [k for k in next(iter(results.values())) if k != "threads"]
    lines = ["| busy neighbours | threads | " + " | ".join(measures) + " |", "|---|---|" + "---:|" * len(measures)]
    for (name, neighbours), row in results.items():
        cells = [f"{row[m]:.3g}" for m in measures]
        lines.append(f"| {neighbours} | {name}: {row['threads']} | " + " | ".join(cells) + " |")
    lines.append(f"(milliseconds, medians; {os.cpu_count()} cores; each configuration in a fresh process; "
                 "a neighbour is a process that keeps one core busy)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0
    results = {}
    for neighbours in NEIGHBOURS:
        for name in CONFIGS:
            print(f"measuring: {name}, {neighbours} busy neighbours", file=sys.stderr)
            results[(name, neighbours)] = run_config(name, neighbours)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("busy_neighbour: interrupted")
