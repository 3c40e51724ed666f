"""The build: build_info, the run-time choice of CPU instruction set, and clear errors."""

import json
import os
import subprocess
import sys

import pytest
import torch

import aevb_fast as af

SCRIPT = """
import json, torch, aevb_fast as af
g = lambda s: torch.Generator().manual_seed(s)
mu, lv = torch.randn(33, 70, generator=g(0)), torch.randn(33, 70, generator=g(1))
x, logits = torch.rand(33, 70, generator=g(2)), 4 * torch.randn(2, 33, 70, generator=g(3))
seed = torch.tensor([11, 12])
z, kl = torch.ops.aevb_fast.sample_and_kl(mu, lv, None, seed, 2)
eps = torch.ops.aevb_fast.reparameterize(torch.zeros(3, 1001), torch.zeros(3, 1001), None, seed, 2)
out = dict(isa=af.build_info()["cpu_isa"], eps=eps.flatten().tolist(), z=z.flatten().tolist(), kl=kl.tolist(),
           bern=af.bernoulli_log_prob(x, logits).flatten().tolist(),
           gauss=af.gaussian_log_prob(x, logits, 0.1 * logits).flatten().tolist())
print(json.dumps(out))
"""


def run_with_isa(isa):
    env = dict(os.environ, AEVB_FAST_CPU_ISA=isa)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_build_info():
    info = af.build_info()
    assert info["version"] == af.__version__
    assert info["torch"] == torch.__version__
    assert info["cpu_isa"] in info["cpu_isas_compiled"].split(",")
    assert "cuda" in info and "cuda_archs" in info


@pytest.mark.slow
def test_every_compiled_isa_gives_the_same_results():
    compiled = af.build_info()["cpu_isas_compiled"].split(",")
    results = {isa: run_with_isa(isa) for isa in compiled}
    base = results["DEFAULT"]
    assert base["isa"] == "DEFAULT"
    for isa, result in results.items():
        # A CPU without an instruction set falls back to a lower one rather than crashing.
        assert result["isa"] in compiled
        # The noise is the same to the bit on every instruction set (no FMA contraction).
        assert result["eps"] == base["eps"], isa
        for key in ("z", "kl", "bern", "gauss"):
            torch.testing.assert_close(torch.tensor(result[key]), torch.tensor(base[key]), rtol=1e-5, atol=1e-4)


def test_cuda_tensor_without_cuda_build_is_a_clear_error():
    if af.build_info()["cuda"] is not None:
        pytest.skip("this build has CUDA")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA tensor: no CUDA device")
    with pytest.raises(RuntimeError, match="built without CUDA"):
        af.gaussian_kl(torch.zeros(2, 3, device="cuda"), torch.zeros(2, 3, device="cuda"))
