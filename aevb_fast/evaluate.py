"""Evaluation of a trained model: the test-set ELBO and the importance-sampled estimate of the
marginal likelihood, log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K
with z_k ~ q(z|x), batched over data points and over chunks of the K samples."""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .elbo import log_importance_weights


@torch.no_grad()
def log_marginal_likelihood(model, x: torch.Tensor, importance_samples: int, *, batch_size: int = 100,
                            sample_chunk: int = 500, generator: torch.Generator | None = None,
                            progress: bool = False) -> torch.Tensor:
    """The importance-sampled log p(x) of every row of x (nats): shape (N,)."""
    model.eval()
    results = []
    for start in tqdm(range(0, len(x), batch_size), disable=not progress, desc="log p(x)", unit="batch"):
        chunk = x[start:start + batch_size].flatten(1)
        mu, logvar = model.encoder(chunk)
        # logsumexp over all K samples, accumulated chunk by chunk to bound memory.
        running = torch.full((len(chunk),), -math.inf, dtype=torch.float64, device=x.device)
        for k0 in range(0, importance_samples, sample_chunk):
            k = min(sample_chunk, importance_samples - k0)
            log_w = log_importance_weights(chunk, mu, logvar, model.decoder, likelihood=model.decoder.likelihood,
                                           num_samples=k, generator=generator)
            running = torch.logaddexp(running, torch.logsumexp(log_w.double(), 0))
        results.append(running - math.log(importance_samples))
    model.train()
    return torch.cat(results)


@torch.no_grad()
def test_elbo(model, x: torch.Tensor, *, batch_size: int = 2000, generator: torch.Generator | None = None) -> float:
    model.eval()
    total = sum(model(x[i:i + batch_size], reduction="sum", generator=generator).item()
                for i in range(0, len(x), batch_size))
    model.train()
    return total / len(x)
