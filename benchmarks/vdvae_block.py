"""Memory of VDVAE's sampling and KL in its decoder blocks, its own formulas against the README's
one-line swap to ``af.sample_and_kl`` (issue 34).

    python benchmarks/vdvae_block.py      # 8 blocks; width 64, B = 16 and width 384, B = 8; 32 x 32

Blocks shaped as VDVAE's ``DecBlock.sample`` at CIFAR-10's top resolution, 8 in a row as in its
decoder (what each block saves for the backward stays alive until the backward): the posterior's
``enc`` conv gives 2 x zdim channels (its mean and log-sigma), the prior's conv 2 x zdim + width
(its mean, log-sigma and a residual), zdim = 16; then ``z_proj`` maps z back to the width.
Two figures per variant: the bytes that the sampling and KL keep alive for the backward (each
saved storage once, whole: a saved channel slice keeps its conv output), and the peak tensor
memory of the block's forward and backward (the profiler's allocation records).
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

import aevb_fast as af
from aevb_fast.bench.memory import profiled_peak_bytes

ZDIM, SIZE, BLOCKS = 16, 32, 8
CASES = [(64, 16), (384, 8)]  # (width, batch)


def vdvae_draw(mu, logsigma):
    return torch.exp(logsigma) * torch.randn_like(mu) + mu


def vdvae_kl(mu1, mu2, logsigma1, logsigma2):
    return -0.5 + logsigma2 - logsigma1 + 0.5 * (logsigma1.exp() ** 2 + (mu1 - mu2) ** 2) / (logsigma2.exp() ** 2)


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.enc = nn.Conv2d(2 * width, 2 * ZDIM, 3, padding=1)
        self.prior = nn.Conv2d(width, 2 * ZDIM + width, 3, padding=1)
        self.z_proj = nn.Conv2d(ZDIM, width, 1)

    def forward(self, x, acts, fused: bool, saved: dict | None = None):
        qm, qv = self.enc(torch.cat([x, acts], dim=1)).chunk(2, dim=1)
        feats = self.prior(x)
        pm, pv, xpp = feats[:, :ZDIM], feats[:, ZDIM:2 * ZDIM], feats[:, 2 * ZDIM:]
        x = x + xpp

        def sample_and_kl():
            if fused:
                return af.sample_and_kl(qm, 2 * qv, pm, 2 * pv, event_dims=0)
            return vdvae_draw(qm, qv), vdvae_kl(qm, pm, qv, pv)

        if saved is None:
            z, kl = sample_and_kl()
        else:
            def pack(t):
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                z, kl = sample_and_kl()
        return x + self.z_proj(z), kl


def inputs(width: int, batch: int):
    torch.manual_seed(0)
    blocks = nn.ModuleList(Block(width) for _ in range(BLOCKS))
    x, acts = torch.randn(batch, width, SIZE, SIZE), torch.randn(batch, width, SIZE, SIZE)
    return blocks, x, acts


def run_blocks(blocks, x, acts, fused: bool, saved: dict | None = None):
    kl_total = 0.0
    for block in blocks:
        x, kl = block(x, acts, fused, saved)
        kl_total = kl_total + kl.sum(dim=(1, 2, 3))
    return x, kl_total


def saved_bytes(width: int, batch: int, fused: bool) -> int:
    blocks, x, acts = inputs(width, batch)
    saved: dict = {}
    run_blocks(blocks, x, acts, fused, saved)
    return sum(saved.values())


def peak_bytes(width: int, batch: int, fused: bool) -> int:
    """The peak tensor memory of the blocks' forward and backward (the profiler's records)."""
    blocks, x, acts = inputs(width, batch)

    def step():
        out, kl = run_blocks(blocks, x, acts, fused)
        (out.square().mean() + kl.mean()).backward()

    step()  # warm-up; then the gradients are freed, so that nothing older is freed while recording
    blocks.zero_grad(set_to_none=True)
    return profiled_peak_bytes(step)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    print(f"aevb_fast {af.build_info()['version']}, torch {torch.__version__}, {BLOCKS} blocks, {SIZE}x{SIZE}, "
          f"zdim {ZDIM}")
    print("| width | batch | variant | saved by sample + KL (MB) | peak of the blocks' step (MB) |")
    print("|---:|---:|---|---:|---:|")
    for width, batch in CASES:
        for fused in (False, True):
            peak = peak_bytes(width, batch, fused)
            name = "af.sample_and_kl (README)" if fused else "VDVAE's formulas"
            print(f"| {width} | {batch} | {name} | {saved_bytes(width, batch, fused) / 1e6:.1f} | {peak / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
