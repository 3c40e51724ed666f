"""What a training step optimises, for any model with ``encoder(x) -> (mu, logvar)`` and
``decoder(z) -> logits`` (Bernoulli) or ``(mean, logvar)`` (Gaussian)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..distributions import look_like_probabilities
from ..elbo import elbo
from .wake_sleep import WakeSleep


def check_model(model: nn.Module) -> None:
    if not (
        isinstance(model, nn.Module)
        and callable(getattr(model, "encoder", None))
        and callable(getattr(model, "decoder", None))
    ):
        raise ValueError(
            "train: model must be an nn.Module with encoder(x) -> (mu, logvar) and "
            "decoder(z) -> logits or (mean, logvar), as aevb_fast.models.VAE has"
        )


def _first_call(module, value: Tensor, call: str, what: str):
    """The model's first call: a layer that does not fit the data's shape (a flat (N, 784) array
    for a convolutional encoder, channels last) says which shape the trainer passed."""
    try:
        return module(value)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"train: {call} failed on {what} of shape {tuple(value.shape)} and dtype {value.dtype}: {first}"
        ) from error


@torch.no_grad()
def decoder_likelihood(model: nn.Module, x: Tensor) -> str:
    """The likelihood a decoder's output implies on the minibatch ``x`` (a few points): a tensor
    of logits is Bernoulli, a (mean, logvar) pair Gaussian. Checks the encoder's output on the way,
    and refuses a Bernoulli decoder that returns probabilities."""
    was_training = model.training
    model.eval()
    try:
        encoded = _first_call(model.encoder, x, "model.encoder(x)", "x, a minibatch of the data as given,")
        if not (isinstance(encoded, (tuple, list)) and len(encoded) == 2 and encoded[0].dim() == 2):
            raise ValueError("train: model.encoder(x) must return (mu, logvar), each of shape (B, J)")
        z = encoded[0]
        out = _first_call(model.decoder, z, "model.decoder(z)", "z, the encoder's mu,")
        probabilities = isinstance(out, Tensor) and _returns_probabilities(model.decoder, z, out)
    finally:
        model.train(was_training)
    if probabilities:
        raise ValueError(
            f"train: model.decoder(z) returned values all in [0, 1] on {len(x)} training points, and for z "
            "far from them: probabilities, but a Bernoulli decoder must return logits (drop its final "
            "sigmoid; torch.sigmoid(logits) gives the probabilities back)"
        )
    if isinstance(out, Tensor):
        return "bernoulli"
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return "gaussian"
    raise ValueError("train: model.decoder(z) must return logits (a tensor) or a (mean, logvar) pair")


def _returns_probabilities(decoder: nn.Module, z: Tensor, out: Tensor) -> bool:
    """Whether a decoder whose output at ``z`` is ``out`` returns probabilities (a final sigmoid).
    Read as logits they hold every pixel's probability of 1 between 1/2 and 0.73: the run ends
    near -D log 2 nats, which looks like a result. An untrained decoder's logits can lie in [0, 1]
    too (small weights about a bias in (0, 1)), but only a sigmoid's output stays there for z a
    thousand times as far out. Judged on at least 64 values a point."""
    if out[0].numel() < 64 or not look_like_probabilities(out):
        return False
    far = torch.randn(z.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out_far = decoder((1e3 * far).to(z))
    return bool(((out_far >= 0) & (out_far <= 1)).all())


class ELBOObjective(nn.Module):
    """``forward(x) -> (loss, bound)``: the negative ELBO to minimise and the minibatch's mean
    bound (AEVB), or the wake-sleep surrogate loss and the same bound (the paper's baseline)."""

    def __init__(self, model: nn.Module, likelihood: str, algorithm: str = "aevb"):
        super().__init__()
        self.model, self.likelihood = model, likelihood
        self.wake_sleep = WakeSleep(model) if algorithm == "wake-sleep" else None

    def bound(self, x: Tensor, **elbo_options) -> Tensor:
        mu, logvar = self.model.encoder(x)
        return elbo(x, mu, logvar, self.model.decoder, likelihood=self.likelihood, **elbo_options)

    def forward(
        self,
        x: Tensor,
        *,
        num_samples: int = 1,
        estimator: str = "analytic",
        beta: float = 1.0,
        free_bits: float = 0.0,
        backend: str = "fused",
        fused_head: bool = True,
    ) -> tuple[Tensor, Tensor]:
        if self.wake_sleep is not None:
            return self.wake_sleep(x, backend=backend)
        bound = self.bound(
            x,
            num_samples=num_samples,
            estimator=estimator,
            beta=beta,
            free_bits=free_bits,
            backend=backend,
            fused_head=fused_head,
        )
        return -bound, bound
