"""What a busy neighbour costs on a shared CPU: torch's threads with and without another job.

    python benchmarks/busy_neighbour.py            # about 2 minutes on 2 cores; nothing else running
    python benchmarks/busy_neighbour.py --markdown # the README's table

Each configuration runs in a fresh process (OpenMP reads its environment when torch loads):
torch's default thread count, 1 thread, and the default count with ``OMP_WAIT_POLICY=PASSIVE``
(threads sleep at a barrier instead of spinning). Each is timed on a quiet machine and beside one
neighbour process that keeps one core busy (a Python loop). The measures: a (100, 784) add (the
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

CONFIGS = {  # name: (threads or 0 for torch's default, extra environment)
    "default threads": (0, {}),
    "1 thread": (1, {}),
    "default, OMP_WAIT_POLICY=PASSIVE": (0, {"OMP_WAIT_POLICY": "PASSIVE"}),
}
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

    if threads:
        torch.set_num_threads(threads)
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


def run_config(name: str, neighbour: bool) -> dict:
    threads, env = CONFIGS[name]
    busy = subprocess.Popen(NEIGHBOUR) if neighbour else None
    try:
        out = subprocess.run([sys.executable, __file__, "--child", str(threads)], env={**os.environ, **env},
                             check=True, capture_output=True, text=True).stdout
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return json.loads(out.strip().splitlines()[-1])


def markdown(results: dict) -> str:
    columns = [(name, neighbour) for neighbour in (False, True) for name in CONFIGS]
    measures = [k for k in next(iter(results.values())) if k != "threads"]
    head = ["measure (ms)"] + [f"{name}{', busy neighbour' if n else ''}" for name, n in columns]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(columns)]
    for measure in measures:
        cells = [f"{results[f'{name}|{n}'][measure]:.3g}" for name, n in columns]
        lines.append(f"| {measure} | " + " | ".join(cells) + " |")
    threads = results["default threads|False"]["threads"]
    lines.append(f"(torch's default here: {threads} threads; medians; each configuration in a fresh process)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown only")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0
    results = {}
    for neighbour in (False, True):
        for name in CONFIGS:
            if not args.markdown:
                print(f"measuring: {name}{', busy neighbour' if neighbour else ''}", file=sys.stderr)
            results[f"{name}|{neighbour}"] = run_config(name, neighbour)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("busy_neighbour: interrupted")
