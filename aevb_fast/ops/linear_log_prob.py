"""The linear_log_prob family: the decoder's output layer fused with its likelihood,
linear_bernoulli_log_prob and linear_gaussian_log_prob (``csrc/*/linear_log_prob.*``): wrappers,
chunking and fakes. No autocast rule: they promote h, weight and x to one dtype as given."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ._arguments import accumulate_dtype, check_reduction, check_same_device, promoted_dtype, reduced_shape
from .family import OpFamily


class LinearLogProbOps:
    """The family's public functions, over the library ``self._ops``."""

    def linear_bernoulli_log_prob(
        self,
        x: Tensor,
        h: Tensor,
        weight: Tensor,
        bias: Tensor | None = None,
        *,
        reduction: str = "none",
        chunk_size: int | None = None,
    ) -> Tensor:
        """``bernoulli_log_prob(x, h @ weight.T + bias)`` without the logits ever stored whole.

        ``h`` is the decoder's last hidden layer, ``(..., H)``; ``weight`` is ``(D, H)`` and
        ``bias`` ``(D,)``, as in ``nn.Linear(H, D)``; ``x`` is ``(..., D)``, broadcast over
        leading (sample) dims of ``h`` as in ``bernoulli_log_prob``. Rows are processed
        ``chunk_size`` at a time (default: about 2**20 logits per chunk on the CPU; on a GPU
        equal chunks of at least 2**24 logits and an eighth of them all), so at most
        ``chunk_size x D`` logits exist at once. ``reduction``: ``"none"`` (one
        value per row of ``h``, shape ``h.shape[:-1]``; the backward recomputes each chunk's
        logits), ``"sum"`` or ``"mean"`` (a scalar; the gradients are computed in the forward pass
        and the backward only scales them). Gradients flow to ``h``, ``weight`` and ``bias``;
        none to ``x``.
        """
        check_reduction("linear_bernoulli_log_prob", reduction)
        _check_x_needs_no_gradient("linear_bernoulli_log_prob", x, "bernoulli_log_prob(x, h @ weight.T + bias)")
        x, h, weight, bias = promoted_dtype(x, h, weight, bias)
        chunk = _chunk_rows(x, h, weight, chunk_size)
        return self._ops.linear_bernoulli_log_prob(x, h, weight, bias, reduction, chunk)

    def linear_gaussian_log_prob(
        self,
        x: Tensor,
        h: Tensor,
        weight: Tensor,
        bias: Tensor | None = None,
        *,
        reduction: str = "none",
        chunk_size: int | None = None,
    ) -> Tensor:
        """The paper's Gaussian decoder head fused with its likelihood: with
        ``a, logvar = (h @ weight.T + bias).chunk(2, -1)``, ``gaussian_log_prob(x, sigmoid(a),
        logvar)``, never storing ``a`` or ``logvar`` whole.

        ``weight`` is ``(2 D, H)``: the mean's map stacked over the log-variance's, as the last
        ``nn.Linear(H, 2 D)`` of ``aevb_fast.models.GaussianDecoder``; ``bias`` is ``(2 D,)``.
        Shapes, ``reduction`` and ``chunk_size`` as in ``linear_bernoulli_log_prob``.
        """
        check_reduction("linear_gaussian_log_prob", reduction)
        _check_x_needs_no_gradient("linear_gaussian_log_prob", x, "gaussian_log_prob on the head's output")
        x, h, weight, bias = promoted_dtype(x, h, weight, bias)
        chunk = _chunk_rows(x, h, weight, chunk_size)
        return self._ops.linear_gaussian_log_prob(x, h, weight, bias, reduction, chunk)


def _check_x_needs_no_gradient(op: str, x, unfused: str) -> None:
    # The heads give x no gradient: x.grad left None, or only the part of it that flows through
    # an encoder that also reads x, would be a wrong result.
    if isinstance(x, Tensor) and x.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"aevb_fast.{op}: x requires grad, but the fused head gives x no gradient; detach x, or "
            f"use {unfused} (af.elbo does so by itself when x requires grad)"
        )


# Elements of logits per chunk by default on the CPU: a few MB (cache-sized, and enough rows for
# MKL's GEMM).
CPU_CHUNK_ELEMENTS = 2**20
# On a GPU a large product is what keeps it busy: chunks of at least 2**24 logits, and at least an
# eighth of all the logits (the two chunk buffers then hold an eighth of what the unfused layer's
# logits and their gradient do, at most a 32nd of the device's memory), cut into equal chunks
# so that none is a small remainder (issue 30: 8 chunks of 32768 rows at B = 262144, D = 784,
# where a fixed 2**24 made 12 and a quarter).
CUDA_MIN_CHUNK_ELEMENTS = 2**24
CUDA_CHUNKS_AT_MOST = 8


def _chunk_rows(x: Tensor, h: Tensor, weight: Tensor, chunk_size: int | None) -> int:
    if torch.jit.is_tracing():  # the sizes read below become constants of the trace: no warning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return _chunk_rows_of(x, h, weight, chunk_size)
    return _chunk_rows_of(x, h, weight, chunk_size)


def _chunk_rows_of(x: Tensor, h: Tensor, weight: Tensor, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"aevb_fast: chunk_size must be a positive int or None, got {chunk_size!r}")
        return chunk_size
    width = max(1, weight.shape[0] if weight.dim() == 2 else 1)
    if h.device.type != "cuda":
        return max(1, CPU_CHUNK_ELEMENTS // width)
    rows = math.prod(h.shape[:-1])
    # A batch unknown here gets a size that does not depend on it: a symbolic one (dynamic shapes,
    # no guard on it), or a traced one (a chunk tuned to the traced batch would cut a larger one
    # into thousands).
    if not isinstance(rows, int) or torch.jit.is_tracing():
        return max(1, CUDA_MIN_CHUNK_ELEMENTS // width)
    total_memory = torch.cuda.get_device_properties(h.device).total_memory
    return cuda_chunk_rows(rows, width, h.element_size(), total_memory)


def cuda_chunk_rows(rows: int, width: int, element_size: int, total_memory: int) -> int:
    """Rows per chunk on a GPU: equal chunks of at least CUDA_MIN_CHUNK_ELEMENTS logits and an
    eighth of them all, the two buffers within a 32nd of the device's memory."""
    elements = max(CUDA_MIN_CHUNK_ELEMENTS, -(-rows * width // CUDA_CHUNKS_AT_MOST))
    most_rows = max(1, min(elements, total_memory // (64 * element_size)) // width)
    chunks = max(1, -(-rows // most_rows))
    return max(1, -(-rows // chunks))  # <= most_rows


def _linear_head_fake(x, h, weight, bias, reduction, chunk_size):
    check_same_device(h=h, x=x, weight=weight, bias=bias)
    dtype = accumulate_dtype(h.dtype)
    return h.new_empty(reduced_shape(h.shape[:-1], reduction), dtype=dtype)


def _linear_head_backward_fake(grad, x, h, weight, bias, chunk_size):
    # Contiguous, as the kernels return them (empty_like would keep a transposed weight's strides).
    return h.new_empty(h.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


def _linear_head_with_grads_fake(x, h, weight, bias, reduction, chunk_size):
    check_same_device(h=h, x=x, weight=weight, bias=bias)
    total = h.new_empty((), dtype=accumulate_dtype(h.dtype))
    return total, h.new_empty(h.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


LINEAR_HEAD_OPS = ("linear_bernoulli_log_prob", "linear_gaussian_log_prob")

FAMILY = OpFamily(
    name="linear_log_prob",
    functions=LinearLogProbOps,
    ops=LINEAR_HEAD_OPS,
    fakes={
        **{name: _linear_head_fake for name in LINEAR_HEAD_OPS},
        **{f"{name}_backward": _linear_head_backward_fake for name in LINEAR_HEAD_OPS},
        **{f"{name}_with_grads": _linear_head_with_grads_fake for name in LINEAR_HEAD_OPS},
    },
    extra_backward_ops=tuple(f"{name}_with_grads" for name in LINEAR_HEAD_OPS),
)
