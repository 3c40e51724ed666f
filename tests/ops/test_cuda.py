"""What only a GPU can show: a CUDA graph replays with fresh noise, autocast gives float32
reductions, tensors past 2^31 elements. Skipped without a CUDA device; the kernel paths and the
noise against the CPU are in test_gpu_kernels.py (on a GPU and under the CUDA emulation)."""

import pytest
import torch

import aevb_fast as af
from testing import require_device


@pytest.fixture(autouse=True)
def cuda_only():
    require_device("cuda")


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
    mu = torch.randn(64, 20, device="cuda")
    x = torch.rand(64, 784, device="cuda").bernoulli()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = linear(mu)  # bfloat16 under autocast
        z, kl = af.sample_and_kl(h[:, :20], h[:, 20:40])
        ll = af.bernoulli_log_prob(x.bfloat16(), h)
    assert h.dtype == torch.bfloat16 and z.dtype == torch.bfloat16
    assert kl.dtype == torch.float32 and ll.dtype == torch.float32


# 2^22 + 5 rows of 512: 2^31 + 2560 elements (4 GiB a tensor in bfloat16). 64-bit indexing in
# every kernel, and grid-stride loops that take a second pass: the grid is capped at 65535 * 8
# blocks of 256 threads (2^27 threads), fewer than the 2^28 packs or the 2^27 warp-row threads.
BIG_ROWS, BIG_COLS = 2**22 + 5, 512


def _needs_free_gpu_memory(gib):
    free, _ = torch.cuda.mem_get_info()
    if free < gib * 2**30:
        pytest.skip(f"needs {gib} GiB of free GPU memory")


def test_log_prob_past_2_31_elements():
    _needs_free_gpu_memory(40)
    # Row-dependent values (a wrong-row read gives a wrong row): logits a_r in {-1, -0.5, 0, 0.5,
    # 1}, x b_r in {0, 1}, both exact in bfloat16.
    r = torch.arange(BIG_ROWS, device="cuda")
    a = ((r % 5) - 2).double() / 2
    b = (r % 2).double()
    logits = a.bfloat16()[:, None].expand(BIG_ROWS, BIG_COLS).contiguous().requires_grad_()
    x = b.bfloat16()[:, None].expand(BIG_ROWS, BIG_COLS).contiguous()
    ll = af.bernoulli_log_prob(x, logits)
    expected = BIG_COLS * (b * a - torch.nn.functional.softplus(a))
    torch.testing.assert_close(ll.double(), expected, rtol=1e-5, atol=1e-3)
    ll.backward(torch.ones_like(ll))
    grad_row = b - torch.sigmoid(a)  # d ll / d logit, the same along a row
    for extreme in (logits.grad.amin(dim=1), logits.grad.amax(dim=1)):
        torch.testing.assert_close(extreme.double(), grad_row, rtol=1e-2, atol=1e-2)


def test_sample_and_kl_past_2_31_elements():
    _needs_free_gpu_memory(40)
    mu = torch.zeros(BIG_ROWS, BIG_COLS, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    logvar = torch.zeros_like(mu, requires_grad=True)
    z, kl = af.sample_and_kl(mu, logvar, generator=torch.Generator("cuda").manual_seed(3))
    assert torch.equal(kl, torch.zeros_like(kl))
    z.backward(torch.ones_like(z))
    # z = eps; grad_logvar = eps / 2 from the noise the backward regenerates: the same at every
    # index, the last rows included.
    assert torch.equal(logvar.grad * 2, z.detach())
    tail = z[-1000:].float()
    assert abs(tail.mean().item()) < 0.01 and abs(tail.std().item() - 1) < 0.01


def test_a_side_stream_gives_the_default_streams_results():
    # The kernels launch on the current stream: on a side stream they must see the inputs that
    # stream waited for and finish before the stream's later work reads their outputs.
    g = torch.Generator("cuda").manual_seed(0)
    mu = torch.randn(512, 784, device="cuda", generator=g, requires_grad=True)
    logvar = torch.randn(512, 784, device="cuda", generator=g, requires_grad=True)
    x = torch.rand(512, 784, device="cuda", generator=g)
    seed = torch.tensor([7, 8], device="cuda")

    def step():
        z, kl = torch.ops.aevb_fast.sample_and_kl(mu, logvar, None, seed, 2)
        loss = (af.bernoulli_log_prob(x, z) - kl).sum()
        return [loss.detach(), *torch.autograd.grad(loss, (mu, logvar))]

    expected = step()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = step()
        got = [t * 1 for t in got]  # later work on the side stream reads the kernels' outputs
    torch.cuda.current_stream().wait_stream(side)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
