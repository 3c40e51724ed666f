"""What a training step optimises, for any model with ``encoder(x) -> (mu, logvar)`` and
``decoder(z) -> logits`` (Bernoulli) or ``(mean, logvar)`` (Gaussian)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..distributions import look_like_probabilities
from ..elbo import elbo
from .wake_sleep import WakeSleep
from .warn import warn_user


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


def decoder_likelihood(model: nn.Module, x: Tensor) -> str:
    """The likelihood a decoder's output implies on the minibatch ``x`` (a few points): a tensor
    of logits is Bernoulli, a (mean, logvar) pair Gaussian. Checks the encoder's output on the way,
    and refuses a Bernoulli decoder that returns probabilities."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            encoded = _first_call(model.encoder, x, "model.encoder(x)", "x, a minibatch of the data as given,")
        if not (isinstance(encoded, (tuple, list)) and len(encoded) == 2 and encoded[0].dim() == 2):
            raise ValueError("train: model.encoder(x) must return (mu, logvar), each of shape (B, J)")
        z = encoded[0]
        out = _first_call(model.decoder, z, "model.decoder(z)", "z, the encoder's mu,")  # with its graph
        if not isinstance(out, Tensor):
            verdict = None
        elif _made_by_sigmoid(out):
            verdict = "sigmoid"
        else:
            with torch.no_grad():
                verdict = _probabilities_verdict(model.decoder, z, out.detach())
    finally:
        model.train(was_training)
    if verdict == "sigmoid":
        raise ValueError(
            "train: model.decoder(z) returns probabilities (its output comes from a sigmoid, or stays in "
            "[0, 1] and saturates at 0 or 1 for z far out), but a Bernoulli decoder must return logits "
            "(drop its final sigmoid; torch.sigmoid(logits) gives the probabilities back)"
        )
    if verdict == "maybe":
        warn_user(
            UserWarning(
                f"train: model.decoder(z) returned values all in [0, 1] on {len(x)} training points, and for z "
                "far from them too: if these are probabilities (a final sigmoid), the run trains the wrong "
                "objective; a Bernoulli decoder must return logits"
            )
        )
    if isinstance(out, Tensor):
        return "bernoulli"
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return "gaussian"
    raise ValueError("train: model.decoder(z) must return logits (a tensor) or a (mean, logvar) pair")


# Autograd nodes that only move or copy values: a sigmoid's output reshaped is still probabilities.
_LAYOUT_NODES = {
    "ViewBackward0",
    "ReshapeAliasBackward0",
    "UnsafeViewBackward0",
    "PermuteBackward0",
    "TransposeBackward0",
    "UnsqueezeBackward0",
    "SqueezeBackward0",
    "SqueezeBackward1",
    "CloneBackward0",
    "ToCopyBackward0",
}


def _made_by_sigmoid(out: Tensor) -> bool:
    """Whether the decoder's last operation, past reshapes, was a sigmoid (its autograd graph
    says so when its parameters need gradients; a compiled decoder's does not)."""
    node = out.grad_fn
    while node is not None and type(node).__name__ in _LAYOUT_NODES:
        node = node.next_functions[0][0]
    return node is not None and type(node).__name__ == "SigmoidBackward0"


def _probabilities_verdict(decoder: nn.Module, z: Tensor, out: Tensor) -> str | None:
    """Whether a decoder whose output at ``z`` is ``out`` returns probabilities (a final sigmoid):
    "sigmoid", "maybe" or None (logits). Read as logits, probabilities hold every pixel's
    probability of 1 between 1/2 and 0.73: the run ends near -D log 2 nats, which looks like a
    result. An untrained decoder's logits can lie in [0, 1] too (small weights about a bias in
    (0, 1)), but only a sigmoid's output stays there for z a thousand times as far out (or 100
    or 10 times, where that overflows), where it saturates at 0 or 1; a decoder that normalises
    its input (a LayerNorm) looks the same there: "maybe". Judged on at least 64 values a point."""
    if out[0].numel() < 64 or not look_like_probabilities(out):
        return None
    far = torch.randn(z.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for scale in (1e3, 1e2, 1e1):  # nearer in where far out overflows (an exp inside: inf - inf)
        try:
            out_far = decoder((scale * far).to(z))
        except Exception:  # a decoder made for z near its training range: no answer
            return None
        finite = out_far[~torch.isnan(out_far)] if isinstance(out_far, Tensor) else None
        if finite is None or finite.numel() > 0:
            break
    if finite is None or finite.numel() == 0 or not bool(((finite >= 0) & (finite <= 1)).all()):
        return None
    saturated = (finite < 1e-3) | (finite > 1 - 1e-3)
    return "sigmoid" if saturated.float().mean() >= 0.5 else "maybe"


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
