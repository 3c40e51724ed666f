"""aevb_fast: fused C++/CUDA operators for the AEVB / VAE objective (Kingma & Welling, 2013)."""

from __future__ import annotations

import torch

from . import models, reference
from .elbo import ELBOLoss, elbo
from .ops import (
    _C,
    bernoulli_log_prob,
    gaussian_kl,
    gaussian_log_prob,
    linear_bernoulli_log_prob,
    linear_gaussian_log_prob,
    reparameterize,
    sample_and_kl,
)

__version__ = _C.build_info()["version"]

__all__ = [
    "reparameterize",
    "gaussian_kl",
    "sample_and_kl",
    "bernoulli_log_prob",
    "gaussian_log_prob",
    "linear_bernoulli_log_prob",
    "linear_gaussian_log_prob",
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
