#!/usr/bin/env bash
# Builds a wheel of aevb_fast against the installed torch and installs it into a fresh virtual
# environment that holds only that torch (and numpy): import, build_info(), one op forward and
# backward. A wheel is tied to the torch it was built against (the C++ ABI changes between torch
# versions); this checks that it carries everything else it needs.
#
#   bash .ci/check_wheel.sh            # wheel left in dist/
set -euo pipefail
cd "$(dirname "$0")/.."

torch_version=$(python -c "import torch; print(torch.__version__.split('+')[0])")
mkdir -p dist
rm -f dist/aevb_fast-*.whl
# A CPU wheel, built in the developer build's directory (pyproject.toml's build/{wheel_tag}) so
# that its compiled objects are reused: a fresh build costs about 3 minutes on 2 cores. Configured
# without the CUDA emulation, the build installs no emulation module (it has sanitizers in it),
# which a wheel must not carry: checked below.
AEVB_FAST_EMULATED_CUDA=0 AEVB_FAST_CUDA=0 pip wheel --no-build-isolation --no-deps -w dist . 2>&1 | tail -n 3
wheel=$(ls dist/aevb_fast-*.whl)
echo "built $wheel"
if unzip -l "$wheel" | grep -q "_emulated"; then
  echo "check_wheel: $wheel carries the CUDA emulation module" >&2
  exit 1
fi

venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python -m venv "$venv"
"$venv/bin/pip" install -q "torch==$torch_version" "numpy>=1.24"
"$venv/bin/pip" install -q --no-deps "$wheel"
# Run from an empty folder so that the source tree's aevb_fast/ cannot be imported instead.
cd "$venv"
"$venv/bin/python" - <<'PY'
import torch

import aevb_fast as af

assert af.__file__.startswith(__import__("sys").prefix), f"imported {af.__file__}, not the wheel"
info = af.build_info()
print(info)
assert info["torch_built_against"].split("+")[0] == torch.__version__.split("+")[0]
mu = torch.randn(8, 4, requires_grad=True)
logvar = torch.randn(8, 4, requires_grad=True)
z, kl = af.sample_and_kl(mu, logvar)
loss = kl.sum() - af.bernoulli_log_prob(torch.rand(8, 4), z).sum()
loss.backward()
assert torch.isfinite(loss) and mu.grad.abs().sum() > 0 and logvar.grad is not None
from aevb_fast.distributions import DiagonalNormal, StandardNormal
kl2 = torch.distributions.kl_divergence(DiagonalNormal(mu, logvar), StandardNormal(4))
torch.testing.assert_close(kl2, kl)
print("wheel smoke test passed:", af.__file__)
PY
# The command's entry point is a package of its own (aevb_fast_command): in the wheel, and installed.
"$venv/bin/python" -c "import sys, aevb_fast_command as c; assert c.__file__.startswith(sys.prefix), c.__file__"
test -x "$venv/bin/aevb-fast" && grep -q "aevb_fast_command" "$venv/bin/aevb-fast"
echo "wheel entry point: $venv/bin/aevb-fast -> aevb_fast_command"
