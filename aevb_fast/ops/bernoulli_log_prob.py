"""The bernoulli_log_prob family: its wrapper, fakes and autocast rule (``csrc/*/bernoulli_log_prob.*``)."""

from __future__ import annotations

from torch import Tensor

from ._arguments import (
    accumulate_dtype,
    check_reduction,
    log_prob_arguments,
    log_prob_shape,
    reduced_shape,
    required_event_dims,
)
from .family import OpFamily


class BernoulliLogProbOps:
    """The family's public function, over the library ``self._ops``."""

    def bernoulli_log_prob(
        self, x: Tensor, logits: Tensor, *, event_dims: int | None = None, reduction: str = "none"
    ) -> Tensor:
        """``sum(x * logits - softplus(logits))`` over the trailing ``event_dims`` dims (required
        when ``x`` has more than 2 dims; else 1), per data point (``reduction="none"``) or summed
        or averaged over them (``"sum"``, ``"mean"``: one pass makes the value and, when ``x``
        needs no gradient, the gradient for ``logits``, so the backward moves no memory when its
        incoming gradient is 1 and scales it in place otherwise; no double backward).

        ``logits`` are the decoder's output *before* any sigmoid. A sigmoid's output (the
        probabilities a pytorch/examples-style decoder returns) passed here trains the wrong
        objective without an error: keep the pre-sigmoid output.
        ``x`` may lack leading (sample) dims of ``logits``; it is broadcast without a copy. Other
        shapes broadcast and dtypes promote as in ``x * logits`` (binary ``x`` may be bool or
        uint8); the result is float32 for 16-bit inputs.
        """
        check_reduction("bernoulli_log_prob", reduction)
        event_dims = required_event_dims("bernoulli_log_prob", "x", x, event_dims)
        x, logits = log_prob_arguments("bernoulli_log_prob", x, (logits,), ("logits",), event_dims)
        return self._ops.bernoulli_log_prob(x, logits, event_dims, reduction)


def _bernoulli_log_prob_fake(x, logits, event_dims, reduction="none"):
    shape = log_prob_shape(x, logits, event_dims, "logits")
    return logits.new_empty(reduced_shape(shape, reduction), dtype=accumulate_dtype(logits.dtype))


def _bernoulli_log_prob_with_grad_fake(x, logits, event_dims, reduction):
    log_prob_shape(x, logits, event_dims, "logits")
    return logits.new_empty((), dtype=accumulate_dtype(logits.dtype)), logits.new_empty(logits.shape)


def _bernoulli_log_prob_backward_fake(grad, x, logits, event_dims):
    # Contiguous, as the kernel returns it (empty_like would keep a transposed input's strides,
    # and a compiled graph would read the kernel's output with them).
    return logits.new_empty(logits.shape)


FAMILY = OpFamily(
    name="bernoulli_log_prob",
    functions=BernoulliLogProbOps,
    ops=("bernoulli_log_prob",),
    fakes={
        "bernoulli_log_prob": _bernoulli_log_prob_fake,
        "bernoulli_log_prob_backward": _bernoulli_log_prob_backward_fake,
        "bernoulli_log_prob_with_grad": _bernoulli_log_prob_with_grad_fake,
    },
    autocast_float32=("bernoulli_log_prob",),
    extra_backward_ops=("bernoulli_log_prob_with_grad",),
)
