"""Evaluation of a trained model: the test-set ELBO and the importance-sampled estimate of the
marginal likelihood, log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K
with z_k ~ q(z|x), batched over data points and over chunks of the K samples."""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from ..elbo import elbo, log_importance_weights
from . import data as datasets
from .checkpoint import RunError, config_from_state


@torch.no_grad()
def log_marginal_likelihood(model, x: torch.Tensor, importance_samples: int, *, batch_size: int = 100,
                            sample_chunk: int = 500, generator: torch.Generator | None = None,
                            progress: bool = False, likelihood: str | None = None) -> torch.Tensor:
    """The importance-sampled log p(x) of every data point of x (nats): shape (N,).
    ``likelihood``: the decoder's (``model.decoder.likelihood`` when not given)."""
    likelihood = likelihood or model.decoder.likelihood
    model.eval()
    results = []
    # In data points, so that the bar's rate and ETA read as the whole job's.
    bar = tqdm(total=len(x), disable=not progress, desc=f"log p(x), K={importance_samples}", unit="point")
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        mu, logvar = model.encoder(chunk)
        # logsumexp over all K samples, accumulated chunk by chunk to bound memory.
        running = torch.full((len(chunk),), -math.inf, dtype=torch.float64, device=x.device)
        for k0 in range(0, importance_samples, sample_chunk):
            k = min(sample_chunk, importance_samples - k0)
            log_w = log_importance_weights(chunk, mu, logvar, model.decoder, likelihood=likelihood,
                                           num_samples=k, generator=generator)
            running = torch.logaddexp(running, torch.logsumexp(log_w.double(), 0))
        results.append(running - math.log(importance_samples))
        bar.update(len(chunk))
    bar.close()
    model.train()
    return torch.cat(results)


@torch.no_grad()
def test_elbo(model, x: torch.Tensor, *, batch_size: int = 2000, generator: torch.Generator | None = None,
              likelihood: str | None = None) -> float:
    """The ELBO (analytic KL, L = 1) per data point of x."""
    likelihood = likelihood or model.decoder.likelihood
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        chunk = x[i:i + batch_size]
        mu, logvar = model.encoder(chunk)
        total += elbo(chunk, mu, logvar, model.decoder, likelihood=likelihood, reduction="sum",
                      generator=generator).item()
    model.train()
    return total / len(x)


def load_run_data(state: dict) -> datasets.Data:
    """The data a checkpoint was trained on, found again from its config (built-in or a file);
    a one-line error for data that were given to train() in Python."""
    spec = state.get("data_spec") or {"source": "config"}
    if spec["source"] == "python":
        raise RunError("the run's data were given to train() in Python and are not stored with it: "
                       "evaluate it in Python (aevb_fast.training.evaluate) with the same data")
    config = config_from_state(state)
    return datasets.load(config.dataset, config.data_dir, binarize=config.binarize, seed=config.seed,
                         test_data=config.test_data, test_fraction=config.test_fraction)
