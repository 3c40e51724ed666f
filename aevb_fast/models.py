"""The paper's models (Kingma & Welling, 2013, appendix C): MLPs with tanh hidden layers.

- ``Encoder``: x -> (mu, logvar) of q(z | x), a diagonal Gaussian.
- ``BernoulliDecoder``: z -> logits of p(x | z), for binary data (MNIST).
- ``GaussianDecoder``: z -> (mean, logvar) of p(x | z), the mean through a sigmoid, for
  real-valued data in [0, 1] (Frey Face).
- ``VAE``: an encoder and a decoder with the ELBO of ``aevb_fast.elbo``.

Each decoder splits into ``features(z)`` (the last hidden layer h) and ``head`` (its final
``nn.Linear``), so that the fused ELBO can run the head together with the likelihood
(``af.linear_bernoulli_log_prob`` / ``af.linear_gaussian_log_prob``) and never store the logits.

Parameters start as samples of N(0, init_std^2), init_std = 0.01 by default (the paper samples
its parameters from N(0, 0.01)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .elbo import elbo


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with tanh between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _init_normal(module: nn.Module, std: float) -> None:
    for p in module.parameters():
        nn.init.normal_(p, mean=0.0, std=std)


class Encoder(nn.Module):
    def __init__(self, data_dim: int, hidden: int, latent: int, depth: int = 1, init_std: float = 0.01):
        super().__init__()
        self.latent = latent
        self.net = _mlp([data_dim] + [hidden] * depth + [2 * latent])
        _init_normal(self, init_std)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x.flatten(1)).chunk(2, dim=-1)
        return mu, logvar


class BernoulliDecoder(nn.Module):
    likelihood = "bernoulli"
    # forward(z) is head(features(z)), read as logits: af.elbo may fuse head and likelihood.
    fusable_head = "bernoulli"

    def __init__(self, latent: int, hidden: int, data_dim: int, depth: int = 1, init_std: float = 0.01):
        super().__init__()
        self.net = _mlp([latent] + [hidden] * depth + [data_dim])
        _init_normal(self, init_std)

    def features(self, z: Tensor) -> Tensor:
        """The last hidden layer h: what ``head`` maps to the logits."""
        return self.net[:-1](z)

    @property
    def head(self) -> nn.Linear:
        return self.net[-1]

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class GaussianDecoder(nn.Module):
    likelihood = "gaussian"
    # forward(z) is head(features(z)) chunked into (sigmoid(mean pre-activation), logvar).
    fusable_head = "gaussian"

    def __init__(self, latent: int, hidden: int, data_dim: int, depth: int = 1, init_std: float = 0.01):
        super().__init__()
        self.net = _mlp([latent] + [hidden] * depth + [2 * data_dim])
        _init_normal(self, init_std)

    def features(self, z: Tensor) -> Tensor:
        """The last hidden layer h: what ``head`` maps to the mean's pre-activation and logvar."""
        return self.net[:-1](z)

    @property
    def head(self) -> nn.Linear:
        """(2 D, H): the mean's map (through a sigmoid) stacked over the log-variance's."""
        return self.net[-1]

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.net(z).chunk(2, dim=-1)
        return torch.sigmoid(mean), logvar


class VAE(nn.Module):
    """An encoder and a decoder; ``forward(x)`` returns the ELBO (see ``aevb_fast.elbo``)."""

    def __init__(self, encoder: Encoder, decoder: BernoulliDecoder | GaussianDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    @classmethod
    def paper(
        cls,
        data_dim: int,
        hidden: int,
        latent: int,
        likelihood: str = "bernoulli",
        depth: int = 1,
        init_std: float = 0.01,
    ) -> "VAE":
        """The paper's model (Kingma & Welling, 2013, appendix C): MLP encoder and decoder of
        ``depth`` tanh hidden layers of ``hidden`` units, a ``latent``-dim Gaussian posterior, and
        a Bernoulli decoder (binary data) or a Gaussian one (its mean through a sigmoid, data in
        [0, 1]); weights drawn from N(0, init_std^2). ``VAE.paper(784, 500, 20)`` is the MNIST
        model; ``model(x)`` is the ELBO of x (B, data_dim), to maximise."""
        decoder_type = {"bernoulli": BernoulliDecoder, "gaussian": GaussianDecoder}.get(likelihood)
        if decoder_type is None:
            raise ValueError(f"VAE.paper: likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        return cls(
            Encoder(data_dim, hidden, latent, depth, init_std), decoder_type(latent, hidden, data_dim, depth, init_std)
        )

    def forward(self, x: Tensor, **elbo_options) -> Tensor:
        """The ELBO of x; elbo_options go to ``aevb_fast.elbo`` (e.g. ``fused_head=False`` keeps
        the decoder's output layer apart from the likelihood)."""
        mu, logvar = self.encoder(x)
        return elbo(x.flatten(1), mu, logvar, self.decoder, likelihood=self.decoder.likelihood, **elbo_options)
