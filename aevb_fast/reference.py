"""The same functions as the fused operators, in plain PyTorch.

They are the oracle of the tests and the baseline of the benchmarks: what a VAE written in eager
PyTorch computes. Elementwise math runs in the input dtype, as such code would; reductions of
float16/bfloat16 inputs are accumulated and returned in float32, as the fused operators do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "reparameterize",
    "gaussian_kl",
    "sample_and_kl",
    "bernoulli_log_prob",
    "gaussian_log_prob",
    "linear_bernoulli_log_prob",
    "linear_gaussian_log_prob",
]


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tensor_like(value, like: Tensor) -> Tensor:
    """A Python number as a tensor of ``like``'s dtype and device (as torch's wrapped numbers
    promote), so that a number works wherever the fused operators take one (``logvar=0.0``)."""
    return value if isinstance(value, Tensor) else torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _sum_last(t: Tensor, dims: int) -> Tensor:
    dtype = _accumulate_dtype(t.dtype)
    if dims == 0:
        return t.to(dtype)
    return t.sum(dim=tuple(range(-dims, 0)), dtype=dtype)


def reparameterize(
    mu: Tensor,
    logvar: Tensor,
    *,
    eps: Tensor | None = None,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    logvar = _tensor_like(logvar, mu)
    shape = mu.shape if num_samples is None else (num_samples, *mu.shape)
    if eps is None:
        eps = torch.randn(shape, dtype=mu.dtype, device=mu.device, generator=generator)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(
    mu: Tensor,
    logvar: Tensor,
    prior_mu: Tensor | None = None,
    prior_logvar: Tensor | None = None,
    *,
    event_dims: int = 1,
) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) or, given a prior, || N(prior_mu, exp(prior_logvar)) as
    VDVAE's gaussian_analytical_kl writes it, summed over the trailing event_dims dims."""
    logvar = _tensor_like(logvar, mu)
    if prior_mu is None and prior_logvar is None:
        return 0.5 * _sum_last(mu.pow(2) + logvar.exp() - 1 - logvar, event_dims)
    prior_mu = torch.zeros_like(mu) if prior_mu is None else _tensor_like(prior_mu, mu)
    prior_logvar = torch.zeros_like(logvar) if prior_logvar is None else _tensor_like(prior_logvar, mu)
    per_element = (
        -0.5 + 0.5 * (prior_logvar - logvar) + 0.5 * (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp()
    )
    return _sum_last(per_element, event_dims)


def sample_and_kl(
    mu: Tensor,
    logvar: Tensor,
    prior_mu: Tensor | None = None,
    prior_logvar: Tensor | None = None,
    *,
    eps: Tensor | None = None,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    event_dims: int = 1,
) -> tuple[Tensor, Tensor]:
    z = reparameterize(mu, logvar, eps=eps, num_samples=num_samples, generator=generator)
    return z, gaussian_kl(mu, logvar, prior_mu, prior_logvar, event_dims=event_dims)


def bernoulli_log_prob(x: Tensor, logits: Tensor, *, event_dims: int = 1, reduction: str = "none") -> Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over the trailing dims. ``logits`` come before any
    sigmoid: probabilities passed here give a wrong objective with no error."""
    logits = _tensor_like(logits, x)
    return _reduce(_sum_last(x * logits - F.softplus(logits), event_dims), reduction)


def gaussian_log_prob(
    x: Tensor, mean: Tensor, logvar: Tensor, *, event_dims: int = 1, reduction: str = "none"
) -> Tensor:
    mean, logvar = _tensor_like(mean, x), _tensor_like(logvar, x)
    per_element = -0.5 * (math.log(2 * math.pi) + logvar + (x - mean).pow(2) * torch.exp(-logvar))
    return _reduce(_sum_last(per_element, event_dims), reduction)


def _reduce(rows: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return rows.sum()
    if reduction == "mean":
        return rows.mean()
    if reduction != "none":
        raise ValueError(f"reduction must be one of ('none', 'sum', 'mean'), got {reduction!r}")
    return rows


def linear_bernoulli_log_prob(
    x: Tensor,
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    reduction: str = "none",
    chunk_size: int | None = None,
) -> Tensor:
    """An nn.Linear and the Bernoulli likelihood: the logits exist whole (chunk_size is ignored)."""
    return _reduce(bernoulli_log_prob(x, F.linear(h, weight, bias)), reduction)


def linear_gaussian_log_prob(
    x: Tensor,
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    reduction: str = "none",
    chunk_size: int | None = None,
) -> Tensor:
    """The paper's Gaussian head: mean = sigmoid of the first half of the linear map's output,
    log-variance the second half."""
    mean_pre, logvar = F.linear(h, weight, bias).chunk(2, dim=-1)
    return _reduce(gaussian_log_prob(x, torch.sigmoid(mean_pre), logvar), reduction)
