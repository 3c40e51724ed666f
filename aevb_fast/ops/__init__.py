"""The fused operators: Python wrappers over ``torch.ops.aevb_fast.*``, their fake (shape-only)
implementations for ``torch.compile`` and ``torch.export`` (the autograd formulas are in C++).

The forward and backward math runs in the compiled kernels (``csrc/``); the backward of each
forward op is an operator too, so compiled graphs and AOTAutograd see both. The autograd
formulas are registered in C++, beside each op's schema (``csrc/ops/<family>.cpp``): a Python
``register_autograd`` layer cost more than the kernels at the paper's minibatch.

One module per operator family (``sample_and_kl``, ``bernoulli_log_prob``, ``gaussian_log_prob``,
``linear_log_prob``) holds its wrappers, fakes and autocast rule and one ``OpFamily`` entry;
``FAMILIES`` lists them, and ``__all__``, the fakes and the autocast rules are read from it. A new
family: its module, its entry in ``FAMILIES`` and its functions below (CONTRIBUTING.md).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType

import torch

from . import bernoulli_log_prob as _bernoulli_log_prob
from . import gaussian_log_prob as _gaussian_log_prob
from . import linear_log_prob as _linear_log_prob
from . import sample_and_kl as _sample_and_kl

# Re-exported: aevb_fast.ops.accumulate_dtype, draw_seed and the linear heads' constants.
from ._arguments import REDUCTIONS as REDUCTIONS
from ._arguments import accumulate_dtype as accumulate_dtype
from ._arguments import draw_seed as draw_seed
from .family import OpFamily
from .linear_log_prob import LINEAR_HEAD_OPS as LINEAR_HEAD_OPS

# AEVB_FAST_CPU_ISA (to compare the CPU builds) as written by hand: "avx512" or "AVX-512" mean
# AVX512; anything else is an error here, not a silent fall to the slowest kernels.
_isa = os.environ.get("AEVB_FAST_CPU_ISA", "")
if _isa:
    _normalised = _isa.upper().replace("-", "").replace("_", "")
    if _normalised not in ("AVX512", "AVX2", "DEFAULT"):
        raise ImportError(f"aevb_fast: AEVB_FAST_CPU_ISA must be AVX512, AVX2 or DEFAULT, got {_isa!r}")
    os.environ["AEVB_FAST_CPU_ISA"] = _normalised  # read by the kernels' dispatch (csrc/kernel.cpp)

try:
    from .. import _C  # loading the module registers torch.ops.aevb_fast
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "aevb_fast: the compiled extension aevb_fast._C is missing or failed to load "
        f"({error}). Build it against the installed torch with "
        "`pip install --no-build-isolation -e .` from the project's root. A wheel works only "
        "with the torch version it was built against."
    ) from error

_BUILT_AGAINST = _C.build_info()["torch_built_against"]
if _BUILT_AGAINST.split(".")[:2] != torch.__version__.split("+")[0].split(".")[:2]:
    # torch's C++ ABI changes between minor versions: a mismatch crashes later, not here.
    raise ImportError(
        f"aevb_fast was built against torch {_BUILT_AGAINST} but torch {torch.__version__} is "
        "installed. Rebuild it against this torch (`pip install --no-build-isolation -e .`, or "
        "`pip wheel --no-build-isolation --no-deps .` for a wheel), or install torch "
        f"{_BUILT_AGAINST}."
    )

FAMILIES: tuple[OpFamily, ...] = (
    _sample_and_kl.FAMILY,
    _bernoulli_log_prob.FAMILY,
    _gaussian_log_prob.FAMILY,
    _linear_log_prob.FAMILY,
)
__all__ = [op for family in FAMILIES for op in family.ops]
FORWARD_OPS = tuple(__all__)
BACKWARD_OPS = tuple(op for family in FAMILIES for op in family.backward_ops)
# Under torch.autocast the losses run in float32, as torch runs its own (binary_cross_entropy_with_
# logits, mse_loss, ...): their 16-bit inputs are cast up, and the gradients flow back in 16 bits.
# The sampling ops are left alone (z keeps the dtype of mu and logvar, promoted); the linear heads
# promote h, weight and x to one dtype as they are given.
AUTOCAST_FLOAT32_OPS = tuple(op for family in FAMILIES for op in family.autocast_float32)

# ---- a clear error instead of a dispatcher message when CUDA was not built -------------------

_built_cuda = _C.build_info()["cuda"]
if _built_cuda is not None and torch.version.cuda is not None:
    if _built_cuda.split(".")[0] != torch.version.cuda.split(".")[0]:
        raise ImportError(
            f"aevb_fast was built with CUDA {_built_cuda} but torch uses CUDA {torch.version.cuda}; "
            "rebuild it against this torch: `pip install --no-build-isolation -e .`"
        )

if _built_cuda is None:
    _no_cuda = torch.library.Library("aevb_fast", "IMPL")

    def _cuda_missing(*args, **kwargs):
        raise RuntimeError(
            "aevb_fast was built without CUDA, so its operators cannot take CUDA tensors. "
            "Rebuild on a machine with a CUDA build of torch and nvcc: "
            "`AEVB_FAST_CUDA=1 pip install --no-build-isolation -e .`"
        )

    for _name in FORWARD_OPS + BACKWARD_OPS:
        _no_cuda.impl(_name, _cuda_missing, "CUDA")


def tag_compile_caches(compiled: ModuleType) -> None:
    """torch.compile's on-disk caches key a graph by the names of its operators, not by their
    code: after a rebuild that changed an op's fake or autograd formula, a graph compiled before
    would come back from the cache as it was (a stale output stride raises in the compiled
    backward, or with inductor's size asserts off gives wrong gradients). So the caches' key tag
    (``torch.compiler.config.cache_key_tag``, which the user's own tag keeps its place in) carries
    a stamp of this build: a hash of the op layer's sources and of the compiled module (its
    contents, not its file's time: the same build gives the same stamp on every machine, so shared
    caches still hit). Graphs compiled in a process that imported aevb_fast are compiled again
    once per build. A tag set after the import replaces the stamp (and so this protection)."""
    config = getattr(torch.compiler, "config", None)
    if config is None or not hasattr(config, "cache_key_tag"):
        return
    digest = hashlib.blake2b(digest_size=8)
    for path in [*sorted(Path(__file__).parent.glob("*.py")), Path(compiled.__file__)]:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):  # the module's file may be large (CUDA)
                digest.update(block)
    tag = f"{compiled.__name__}-{digest.hexdigest()}"
    if tag not in config.cache_key_tag.split("+"):
        config.cache_key_tag = "+".join(t for t in (config.cache_key_tag, tag) if t)


class OperatorLibrary(*(family.functions for family in FAMILIES)):
    """The public functions over one library of compiled operators: ``torch.ops.aevb_fast``
    (what ``aevb_fast`` exports), or ``torch.ops.aevb_fast_emulated``, the CUDA kernels run on
    CPU tensors by the development build (``aevb_fast.emulated_cuda``). Creating one registers
    the library's fake implementations and autocast rules (its autograd formulas are registered
    in C++). Each is the global ``_library`` of the module that made it (``module``)."""

    def __init__(self, namespace: str, compiled: ModuleType, module: str):
        self._ops = getattr(torch.ops, namespace)
        self._module = module
        tag_compile_caches(compiled)
        for family in FAMILIES:
            for name, fake in family.fakes.items():
                torch.library.register_fake(f"{namespace}::{name}", fake)
        for device_type in ("cpu", "cuda"):
            if torch.amp.is_autocast_available(device_type):
                for name in AUTOCAST_FLOAT32_OPS:
                    torch.library.register_autocast(f"{namespace}::{name}", device_type, torch.float32)

    def __repr__(self) -> str:  # what a bound function shows in a notebook
        return f"<operators torch.ops.{self._ops.name}>"

    def __reduce__(self):
        # Pickled (and deep-copied) by reference, as torch's own functions are: so are its public
        # functions (bound methods), and a model or functools.partial that holds one.
        return _global_library, (self._module,)


def _global_library(module: str) -> OperatorLibrary:
    import importlib

    return importlib.import_module(module)._library


# A wrong argument names the function as the user calls it (torch's own do: "kl_div() got an
# unexpected keyword argument"), not the family class that holds it. (The family class's plain
# functions then no longer pickle by reference; the exported bound methods do, through their
# library's __reduce__.)
for _family in FAMILIES:
    for _name in _family.ops:
        getattr(_family.functions, _name).__qualname__ = _name

# ---- the library that aevb_fast exports --------------------------------------------------------

_library = OperatorLibrary("aevb_fast", _C, __name__)
reparameterize = _library.reparameterize
gaussian_kl = _library.gaussian_kl
sample_and_kl = _library.sample_and_kl
bernoulli_log_prob = _library.bernoulli_log_prob
gaussian_log_prob = _library.gaussian_log_prob
linear_bernoulli_log_prob = _library.linear_bernoulli_log_prob
linear_gaussian_log_prob = _library.linear_gaussian_log_prob
assert all(name in globals() for name in __all__), "a family's function is not exported here"
