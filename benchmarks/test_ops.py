"""The op suite through pytest-benchmark: each op forward+backward, per provider (aevb_fast,
eager, compiled), batch size, L and dtype, grouped so that pytest-benchmark's table compares
the providers of one case side by side. Every provider is checked against the reference before
it is timed (bench._check).

    pytest benchmarks/ --benchmark-only                 # CPU, and CUDA when torch sees a GPU
    pytest benchmarks/ --benchmark-only -k "gaussian_kl and 4096"
    pytest benchmarks/ --benchmark-only --benchmark-json=out.json

`aevb-fast bench` measures the same cases with its own interleaved timing and records GB/s,
memory and the results files; this file is for people who live in pytest-benchmark.
"""

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from aevb_fast.bench import op_suite as bench  # noqa: E402

SIZES = {"cpu": [100, 4096, 65536], "cuda": [4096, 65536, 1048576]}
DTYPES = [torch.float32, torch.bfloat16]
CASES = [(op, L) for op in bench.OPS for L in ((1, 5) if op in bench.SAMPLING_OPS else (1,))]
_providers = {}


def _device_sizes():
    for device, sizes in SIZES.items():
        for batch in sizes:
            yield pytest.param(device, batch, id=f"{device}-batch{batch}")


@pytest.mark.parametrize("provider", bench.PROVIDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("device,batch", list(_device_sizes()))
@pytest.mark.parametrize("op,samples", CASES, ids=[f"{op}-L{L}" for op, L in CASES])
def test_forward_backward(benchmark, op, samples, device, batch, dtype, provider):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if (op, samples) not in _providers:
        _providers[(op, samples)] = bench.providers_for(op, samples)
    steps = _providers[(op, samples)]
    case = bench.make_case(op, batch, 784, 64, dtype, device, samples)
    torch._dynamo.reset()  # see bench.run: compile each case afresh
    bench._check(case, steps)
    step = steps[provider]
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        for t in case.inputs:
            t.grad = None
        step(case)
        synchronize()

    benchmark.group = f"{op} L={samples} {device} {str(dtype).removeprefix('torch.')} batch {batch}"
    benchmark.extra_info.update(bytes_moved=bench.mode_bytes(case, "forward+backward"))
    benchmark.pedantic(run, warmup_rounds=2, rounds=10 if batch >= 65536 else 30, iterations=1)
