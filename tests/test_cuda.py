"""What only a GPU can show: CPU and CUDA draw the same noise, a CUDA graph replays with fresh
noise, and autocast gives float32 reductions. Skipped without a CUDA device."""

import pytest
import torch

import aevb_fast as af

from testing import require_device


@pytest.fixture(autouse=True)
def cuda_only():
    require_device("cuda")


@pytest.mark.parametrize("shape", [(3, 1001), (64, 20), (1, 1)])
def test_cpu_and_cuda_draw_the_same_noise(shape):
    seed = torch.tensor([123456789, 42])
    zeros = torch.zeros(shape)
    cpu = torch.ops.aevb_fast.reparameterize(zeros, zeros, None, seed, 3)
    gpu = torch.ops.aevb_fast.reparameterize(zeros.cuda(), zeros.cuda(), None, seed.cuda(), 3)
    # Same integer RNG and the same float operations (no FMA contraction on either side).
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=2e-7, atol=1e-7)


def test_backward_regenerates_the_forward_noise_on_cuda():
    mu = torch.randn(33, 70, device="cuda", dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(33, 70, device="cuda", dtype=torch.float64, requires_grad=True)
    fn = lambda m, v: af.sample_and_kl(m, v, num_samples=2, generator=torch.Generator("cuda").manual_seed(5))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (mu, logvar))


def test_cuda_graph_replay_draws_fresh_noise():
    mu = torch.zeros(256, 20, device="cuda", requires_grad=True)
    logvar = torch.zeros(256, 20, device="cuda", requires_grad=True)
    x = torch.rand(256, 20, device="cuda").bernoulli()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside the graph
            z, kl = af.sample_and_kl(mu, logvar)
            (af.bernoulli_log_prob(x, z) - kl).sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        z, kl = af.sample_and_kl(mu, logvar)
        loss = -(af.bernoulli_log_prob(x, z) - kl).sum()
        loss.backward()
    draws = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        draws.append(z.detach().clone())
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert abs(draws[0].std().item() - 1) < 0.1


def test_autocast_bf16_gives_float32_reductions():
    linear = torch.nn.Linear(20, 784).cuda()
    mu, logvar = torch.randn(64, 20, device="cuda"), torch.randn(64, 20, device="cuda")
    x = torch.rand(64, 784, device="cuda").bernoulli()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = linear(mu)  # bfloat16 under autocast
        z, kl = af.sample_and_kl(h[:, :20], h[:, 20:40])
        ll = af.bernoulli_log_prob(x.bfloat16(), h)
    assert h.dtype == torch.bfloat16 and z.dtype == torch.bfloat16
    assert kl.dtype == torch.float32 and ll.dtype == torch.float32


def test_large_tensor_indexing():
    # More than 2^31 elements (8 GiB in bfloat16): 64-bit indexing in every kernel.
    free, _ = torch.cuda.mem_get_info()
    if free < 40 * 2**30:
        pytest.skip("needs 40 GiB of free GPU memory")
    rows, cols = 2**21 + 3, 1024
    x = torch.zeros(rows, cols, device="cuda", dtype=torch.bfloat16)
    out = af.bernoulli_log_prob(x, x)  # logits 0: each term is -log 2
    torch.testing.assert_close(out[-1].item(), -cols * 0.6931471805599453, rtol=1e-5, atol=1e-3)


def _offset_by_one_element(t):
    """The same values, contiguous, starting one element past an aligned address: the kernels'
    128-bit packed path cannot be used and the one-element path runs."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    flat[1:] = t.flatten()
    return flat[1:].view(t.shape)


CASES = {
    "reparameterize": lambda m, v, e: af.reparameterize(m, v, eps=e),
    "gaussian_kl": lambda m, v, e: af.gaussian_kl(m, v),
    "sample_and_kl": lambda m, v, e: af.sample_and_kl(m, v, eps=e),
    "bernoulli_log_prob": lambda m, v, e: af.bernoulli_log_prob(e.sigmoid(), m),
    "gaussian_log_prob": lambda m, v, e: af.gaussian_log_prob(e, m, v),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("aligned", [True, False], ids=["packed", "one-element"])
# 784: a warp per row; 5000 and 8192: a block per row (rows of at least 4096 elements).
@pytest.mark.parametrize("shape", [(37, 784), (3, 5000), (2, 8192)])
@pytest.mark.parametrize("op", list(CASES))
def test_cuda_matches_cpu_on_every_kernel_path(op, shape, aligned, dtype):
    from testing import TOLERANCES, randn, run_with_grads

    inputs = [randn(*shape, seed=s, scale=0.5) for s in range(3)]
    fn = CASES[op]

    def on(device):
        tensors = [t.to(device=device, dtype=dtype) for t in inputs]
        if not aligned:
            tensors = [_offset_by_one_element(t) for t in tensors]
        outs, grads, _ = run_with_grads(fn, tensors)
        return outs, grads

    (out_gpu, grad_gpu), (out_cpu, grad_cpu) = on("cuda"), on("cpu")
    tol = TOLERANCES[dtype]
    for a, b in zip(out_gpu + grad_gpu, out_cpu + grad_cpu):
        if b is None:
            assert a is None
            continue
        torch.testing.assert_close(a.cpu(), b, **tol)


@pytest.mark.parametrize("num_samples", [1, 5])
def test_drawn_noise_backward_matches_cpu(num_samples):
    # The backward's regenerated noise is the forward's on both devices: gradients agree.
    mu = torch.randn(64, 784, dtype=torch.float64)
    logvar = torch.randn(64, 784, dtype=torch.float64) * 0.1
    seed = torch.tensor([987654321, 7])
    results = []
    for device in ("cpu", "cuda"):
        m = mu.to(device).requires_grad_(True)
        v = logvar.to(device).requires_grad_(True)
        z = torch.ops.aevb_fast.reparameterize(m, v, None, seed.to(device), num_samples)
        (z * torch.linspace(-1, 1, z.numel(), dtype=z.dtype, device=device).view_as(z)).sum().backward()
        results.append((z.detach().cpu(), m.grad.cpu(), v.grad.cpu()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
