"""The gaussian_log_prob family: its wrapper, fakes and autocast rule (``csrc/*/gaussian_log_prob.*``)."""

from __future__ import annotations

from torch import Tensor

from ._arguments import (
    accumulate_dtype,
    check_reduction,
    check_same_device,
    log_prob_arguments,
    log_prob_shape,
    reduced_shape,
    required_event_dims,
)
from .family import OpFamily


class GaussianLogProbOps:
    """The family's public function, over the library ``self._ops``."""

    def gaussian_log_prob(
        self, x: Tensor, mean: Tensor, logvar: Tensor, *, event_dims: int | None = None, reduction: str = "none"
    ) -> Tensor:
        """log N(x; mean, diag(exp(logvar))) summed over the trailing ``event_dims`` dims
        (required when ``x`` has more than 2 dims; else 1), per data point or summed or averaged
        over them (``reduction``, as in ``bernoulli_log_prob``). ``x``, ``mean`` and ``logvar``
        broadcast and promote together (a fixed variance may be a scalar ``logvar``, a Python
        number or a tensor of shape ``(1, 1, 1, 1)``); gradients are summed back to each input's
        shape. A scalar, per-example ``(B, 1, 1, 1)`` or batch-shared ``(C, H, W)`` input is read
        without a copy of the full shape; other broadcasts (``(C, 1, 1)``) are copied."""
        check_reduction("gaussian_log_prob", reduction)
        event_dims = required_event_dims("gaussian_log_prob", "x", x, event_dims)
        x, mean, logvar = log_prob_arguments("gaussian_log_prob", x, (mean, logvar), ("mean", "logvar"), event_dims)
        return self._ops.gaussian_log_prob(x, mean, logvar, event_dims, reduction)


def _gaussian_log_prob_fake(x, mean, logvar, event_dims, reduction="none"):
    check_same_device(mean=mean, logvar=logvar)
    shape = log_prob_shape(x, mean, event_dims, "mean")
    return mean.new_empty(reduced_shape(shape, reduction), dtype=accumulate_dtype(mean.dtype))


def _gaussian_log_prob_with_grad_fake(x, mean, logvar, event_dims, reduction):
    check_same_device(mean=mean, logvar=logvar)
    log_prob_shape(x, mean, event_dims, "mean")
    total = mean.new_empty((), dtype=accumulate_dtype(mean.dtype))
    return total, mean.new_empty(mean.shape), mean.new_empty(mean.shape)


def _gaussian_log_prob_backward_fake(grad, x, mean, logvar, event_dims):
    # Contiguous, as the kernel returns them (bernoulli_log_prob's fake says why).
    return mean.new_empty(mean.shape), mean.new_empty(mean.shape)


FAMILY = OpFamily(
    name="gaussian_log_prob",
    functions=GaussianLogProbOps,
    ops=("gaussian_log_prob",),
    fakes={
        "gaussian_log_prob": _gaussian_log_prob_fake,
        "gaussian_log_prob_backward": _gaussian_log_prob_backward_fake,
        "gaussian_log_prob_with_grad": _gaussian_log_prob_with_grad_fake,
    },
    autocast_float32=("gaussian_log_prob",),
    extra_backward_ops=("gaussian_log_prob_with_grad",),
)
