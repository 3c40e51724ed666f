"""What a training step optimises, for any model with ``encoder(x) -> (mu, logvar)`` and
``decoder(z) -> logits`` (Bernoulli) or ``(mean, logvar)`` (Gaussian)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

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
        out = _first_call(model.decoder, encoded[0], "model.decoder(z)", "z, the encoder's mu,")
    finally:
        model.train(was_training)
    if isinstance(out, Tensor):
        # An untrained decoder's logits fall on both sides of 0; probabilities (a final sigmoid)
        # all lie strictly between 0 and 1, and read as logits they hold every pixel's probability
        # of 1 between 1/2 and 0.73: the run ends near -D log 2 nats, which looks like a result.
        # Judged only on at least 64 values a point, and not for a constant output (a zero-
        # initialised output layer's 0s).
        if out[0].numel() >= 64 and bool((out > 0).all() & (out < 1).all() & (out.amax() > out.amin())):
            raise ValueError(
                f"train: model.decoder(z) returned values all between 0 and 1 on {len(x)} training points: "
                "they look like probabilities, but a Bernoulli decoder must return logits (drop its "
                "final sigmoid; torch.sigmoid(logits) gives the probabilities back)"
            )
        return "bernoulli"
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return "gaussian"
    raise ValueError("train: model.decoder(z) must return logits (a tensor) or a (mean, logvar) pair")


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
