"""The in-kernel noise: Philox4x32-10 and the Box-Muller transform of csrc/common/philox.h."""

import math

import pytest
import torch

import aevb_fast as af

M32 = 0xFFFFFFFF


def philox4x32_10(counter, key):
    """Philox4x32-10 in plain Python integers (Salmon et al., 2011)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & M32, (p0 >> 32) ^ c3 ^ k1, p0 & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def expected_normals(key, offset, n):
    """Element 64 b + 16 w + j: word w of counter 16 b + j, words (0, 1) and (2, 3) paired by
    Box-Muller, computed in float64."""
    out = []
    for i in range(n):
        block, w, j = i // 64, (i % 64) // 16, i % 16
        counter = 16 * block + j
        words = philox4x32_10((counter & M32, counter >> 32, offset & M32, offset >> 32), (key & M32, key >> 32))
        a, b = words[w & 2], words[(w & 2) + 1]
        u = ((a >> 8) + 0.5) * 2.0**-24
        v = (b >> 8) * 2.0**-24
        angle = 2 * math.pi * v
        r = math.sqrt(-2.0 * math.log(u))
        out.append(r * (math.cos(angle) if w % 2 == 0 else math.sin(angle)))
    return torch.tensor(out, dtype=torch.float64)


def kernel_normals(key, offset, shape, dtype=torch.float32):
    ones = torch.zeros(shape, dtype=dtype)
    seed = torch.tensor([key, offset], dtype=torch.int64)
    return torch.ops.aevb_fast.reparameterize(ones, ones, None, seed, 1)[0]


def test_philox_known_answers():
    # Known-answer vectors of the Random123 reference implementation.
    assert philox4x32_10((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert philox4x32_10((M32,) * 4, (M32, M32)) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    assert philox4x32_10((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0)) == (
        0xD16CFE09,
        0x94FDCCEB,
        0x5001E420,
        0x24126EA1,
    )


@pytest.mark.parametrize("key, offset", [(0, 0), (123456789, 987654321), (2**62 - 1, 2**40 + 7)])
def test_kernel_matches_python_philox(key, offset):
    # The kernel's float32 polynomials agree with float64 libm to a few float32 ulps.
    n = 1001  # not a multiple of 4 or of a vector width
    got = kernel_normals(key, offset, (n,)).double()
    torch.testing.assert_close(got, expected_normals(key, offset, n), rtol=2e-6, atol=2e-6)
    # float64 inputs see the same float32 normals.
    torch.testing.assert_close(kernel_normals(key, offset, (n,), torch.float64), got, rtol=0, atol=0)


def test_index_not_layout_decides_the_draw():
    # The same flat index gives the same normal whatever the row length and tile boundaries.
    flat = kernel_normals(5, 6, (4 * 700,))
    torch.testing.assert_close(kernel_normals(5, 6, (4, 700)).reshape(-1), flat, rtol=0, atol=0)
    torch.testing.assert_close(kernel_normals(5, 6, (700, 4)).reshape(-1), flat, rtol=0, atol=0)


def test_each_sample_starts_at_a_noise_block():
    # L samples of P parameters: sample l is the stream from element l * ceil(P / 64) * 64 on
    # (philox.h: noise_element), so its normals are P elements of one long draw at that offset.
    params, samples = 100, 3  # 100 parameters: 128 elements of the stream a sample
    zeros = torch.zeros(4, 25)
    z = torch.ops.aevb_fast.reparameterize(zeros, zeros, None, torch.tensor([5, 6]), samples)
    stream = kernel_normals(5, 6, (samples * 128,))
    for l in range(samples):
        torch.testing.assert_close(z[l].reshape(-1), stream[l * 128 : l * 128 + params], rtol=0, atol=0)
    # 64 parameters a sample: the samples follow one another with no gap
    zeros = torch.zeros(2, 32)
    z = torch.ops.aevb_fast.reparameterize(zeros, zeros, None, torch.tensor([5, 6]), samples)
    torch.testing.assert_close(z.reshape(-1), kernel_normals(5, 6, (samples * 64,)), rtol=0, atol=0)


def test_moments_and_distribution():
    n = 1 << 21
    torch.manual_seed(0)
    eps = af.reparameterize(torch.zeros(n), torch.zeros(n)).double()
    se = 1 / math.sqrt(n)
    assert abs(eps.mean().item()) < 5 * se
    assert abs(eps.var().item() - 1) < 5 * math.sqrt(2) * se
    assert abs((eps**3).mean().item()) < 5 * math.sqrt(15) * se  # skewness 0
    assert abs((eps**4).mean().item() - 3) < 5 * math.sqrt(96) * se  # kurtosis 3
    # Kolmogorov-Smirnov distance to N(0, 1) (critical value at the 0.1% level: 1.95 / sqrt(n)).
    sorted_eps = eps.sort().values
    cdf = torch.special.ndtr(sorted_eps)
    ranks = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert (cdf - ranks).abs().max().item() < 1.95 * se
    # Neighbouring elements (same Philox counter, same Box-Muller pair) are uncorrelated.
    pairs = eps.view(-1, 4)
    corr = torch.corrcoef(pairs.t())
    assert (corr - torch.eye(4, dtype=torch.float64)).abs().max().item() < 5 * 4 * se


def test_reproducible_under_manual_seed():
    mu, logvar = torch.zeros(50, 20), torch.zeros(50, 20)
    torch.manual_seed(1)
    a = af.reparameterize(mu, logvar, num_samples=3)
    b = af.reparameterize(mu, logvar, num_samples=3)
    torch.manual_seed(1)
    a2 = af.reparameterize(mu, logvar, num_samples=3)
    torch.manual_seed(2)
    c = af.reparameterize(mu, logvar, num_samples=3)
    assert torch.equal(a, a2)
    assert not torch.equal(a, b) and not torch.equal(a, c)
    # Samples along L are different draws.
    assert not torch.equal(a[0], a[1])


def test_generator_is_honoured():
    mu, logvar = torch.zeros(10, 7), torch.zeros(10, 7)
    state = torch.get_rng_state()
    a = af.sample_and_kl(mu, logvar, generator=torch.Generator().manual_seed(9))[0]
    b = af.sample_and_kl(mu, logvar, generator=torch.Generator().manual_seed(9))[0]
    c = af.sample_and_kl(mu, logvar, generator=torch.Generator().manual_seed(10))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator was not touched
