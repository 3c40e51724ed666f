"""aevb_fast: fused C++/CUDA operators for the AEVB / VAE objective (Kingma & Welling, 2013)."""

from __future__ import annotations

import torch

from . import models, ops, reference
from .elbo import ELBOLoss, elbo
from .ops import *  # noqa: F403  every operator: ops.__all__
from .ops import _C

__version__ = _C.build_info()["version"]

__all__ = [
    *ops.__all__,
    "elbo",
    "ELBOLoss",
    "models",
    "reference",
    "build_info",
]


def build_info() -> dict:
    """How this copy was built and what it runs on: version, torch, CUDA, CPU instruction set."""
    info = dict(_C.build_info())
    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    return info


# Submodules that ``import aevb_fast`` does not load (the trainer needs the [train] extra), reached
# as attributes all the same, as torch.distributions is after ``import torch``.
_LAZY_SUBMODULES = ("distributions", "training")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:  # what tab completion offers: the public names, not the imports
    return sorted({*__all__, *_LAZY_SUBMODULES, "__version__", "ops"})
