"""Where the fixed cost of one call goes at the paper's minibatch (B = 100, J = 20, float32):
seed draw, one operator call with and without the autograd layer, the fused functions against
the eager reference, and the RNG's nanoseconds per normal against torch.randn.

    python benchmarks/call_overhead.py
    AEVB_FAST_CPU_ISA=AVX2 python benchmarks/call_overhead.py   # another instruction set's RNG

Medians of 7 rounds of many calls; a development tool for issue 12's overhead work, not a
benchmark result (those come from `aevb-fast bench`)."""

import time

import torch

import aevb_fast as af
from aevb_fast import reference


def median_us(fn, calls=3000, rounds=7):
    for _ in range(200):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return sorted(times)[rounds // 2]


def main():
    torch.set_num_threads(1)
    ops = torch.ops.aevb_fast
    mu, logvar = torch.randn(100, 20), torch.randn(100, 20)
    mu_g, logvar_g = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    seed, grad_z = torch.tensor([1, 2]), torch.randn(1, 100, 20)
    rows = {
        "seed draw (torch.randint)": lambda: af.ops.draw_seed(mu.device),
        "torch.add, for scale": lambda: torch.add(mu, logvar),
        "op reparameterize, no grad": lambda: ops.reparameterize(mu, logvar, None, seed, 1),
        "op reparameterize_backward": lambda: ops.reparameterize_backward(grad_z, mu, logvar, None, seed),
        "op gaussian_kl, no grad": lambda: ops.gaussian_kl.default(mu, logvar),
        "af.reparameterize, no grad": lambda: af.reparameterize(mu, logvar),
        "af.reparameterize, forward with grad": lambda: af.reparameterize(mu_g, logvar_g),
        "reference.reparameterize, forward with grad": lambda: reference.reparameterize(mu_g, logvar_g),
        "af.reparameterize, forward+backward": lambda: af.reparameterize(mu_g, logvar_g).sum().backward(),
        "reference.reparameterize, forward+backward": lambda: reference.reparameterize(mu_g, logvar_g).sum().backward(),
        "af.gaussian_kl, forward+backward": lambda: af.gaussian_kl(mu_g, logvar_g).sum().backward(),
        "reference.gaussian_kl, forward+backward": lambda: reference.gaussian_kl(mu_g, logvar_g).sum().backward(),
    }
    for name, fn in rows.items():
        print(f"{median_us(fn):8.1f} us  {name}")
    with torch._C._AutoDispatchBelowADInplaceOrView():
        print(f"{median_us(lambda: ops.gaussian_kl.default(mu, logvar)):8.1f} us  op gaussian_kl below the autograd key")
    # 2^16 elements: in cache, and no fresh pages, so that the RNG's own cost shows.
    n = 1 << 16
    zeros, big_seed = torch.zeros(n // 1024, 1024), torch.tensor([3, 4])
    given, out = torch.randn(1, n // 1024, 1024), torch.empty(n)
    per_normal = {
        f"aevb_fast, drawn ({af.build_info()['cpu_isa']}; z = 0 + 1 * eps, written)": lambda: ops.reparameterize(zeros, zeros, None, big_seed, 1),
        "aevb_fast, eps given (the same op without the RNG)": lambda: ops.reparameterize(zeros, zeros, given, None, 1),
        "torch.randn": lambda: torch.randn(n, out=out),
    }
    for name, fn in per_normal.items():
        print(f"{median_us(fn, calls=300) * 1e3 / n:8.2f} ns per normal, 1 thread: {name}")


if __name__ == "__main__":
    main()
