"""The fused operators: Python wrappers over ``torch.ops.aevb_fast.*``, their fake (shape-only)
implementations for ``torch.compile`` and ``torch.export`` (the autograd formulas are in C++).

The forward and backward math runs in the compiled kernels (``csrc/``); the backward of each
forward op is an operator too, so compiled graphs and AOTAutograd see both. The autograd
formulas are registered in C++, beside each op's schema (``csrc/ops/<op>.cpp``): a Python
``register_autograd`` layer cost more than the kernels at the paper's minibatch.

A new operator here: its wrapper (a method of ``OperatorLibrary``, exported below and named in
``__all__``, which ``aevb_fast`` and ``aevb_fast.emulated_cuda`` export as they are), its fakes in
``_FAKES`` and, if it reduces, its name in ``AUTOCAST_FLOAT32_OPS``.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    from . import _C  # loading the module registers torch.ops.aevb_fast
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "aevb_fast: the compiled extension aevb_fast._C is missing or failed to load "
        f"({error}). Build it against the installed torch with "
        "`pip install --no-build-isolation -e .` from the project's root. A wheel works only "
        "with the torch version it was built against."
    ) from error

_BUILT_AGAINST = _C.build_info()["torch_built_against"]
if _BUILT_AGAINST.split(".")[:2] != torch.__version__.split("+")[0].split(".")[:2]:
    # torch's C++ ABI changes between minor versions: a mismatch crashes later, not here.
    raise ImportError(
        f"aevb_fast was built against torch {_BUILT_AGAINST} but torch {torch.__version__} is "
        "installed. Rebuild it against this torch (`pip install --no-build-isolation -e .`, or "
        "`pip wheel --no-build-isolation --no-deps .` for a wheel), or install torch "
        f"{_BUILT_AGAINST}."
    )

__all__ = [
    "reparameterize",
    "gaussian_kl",
    "sample_and_kl",
    "bernoulli_log_prob",
    "gaussian_log_prob",
    "linear_bernoulli_log_prob",
    "linear_gaussian_log_prob",
]

FORWARD_OPS = tuple(__all__)
LINEAR_HEAD_OPS = ("linear_bernoulli_log_prob", "linear_gaussian_log_prob")
BACKWARD_OPS = tuple(f"{name}_backward" for name in FORWARD_OPS) + tuple(
    f"{name}_with_grads" for name in LINEAR_HEAD_OPS
)
REDUCTIONS = ("none", "sum", "mean")


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of reduced outputs (KL, log-likelihoods): float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- a clear error instead of a dispatcher message when CUDA was not built -------------------

_built_cuda = _C.build_info()["cuda"]
if _built_cuda is not None and torch.version.cuda is not None:
    if _built_cuda.split(".")[0] != torch.version.cuda.split(".")[0]:
        raise ImportError(
            f"aevb_fast was built with CUDA {_built_cuda} but torch uses CUDA {torch.version.cuda}; "
            "rebuild it against this torch: `pip install --no-build-isolation -e .`"
        )

if _built_cuda is None:
    _no_cuda = torch.library.Library("aevb_fast", "IMPL")

    def _cuda_missing(*args, **kwargs):
        raise RuntimeError(
            "aevb_fast was built without CUDA, so its operators cannot take CUDA tensors. "
            "Rebuild on a machine with a CUDA build of torch and nvcc: "
            "`AEVB_FAST_CUDA=1 pip install --no-build-isolation -e .`"
        )

    for _name in FORWARD_OPS + BACKWARD_OPS:
        _no_cuda.impl(_name, _cuda_missing, "CUDA")


# ---- noise -----------------------------------------------------------------------------------


def draw_seed(device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    """The kernel's RNG seed, [key, offset], drawn from torch's generator on ``device``.

    Drawing it with a torch random op means that ``torch.manual_seed`` reproduces a run, that a
    ``generator`` is honoured, and that compiled graphs and CUDA graphs draw a fresh seed (hence
    fresh noise) at every call or replay.
    """
    return torch.randint(0, 2**62, (2,), dtype=torch.int64, device=device, generator=generator)


def _noise_arguments(mu: Tensor, eps: Tensor | None, num_samples: int | None):
    """(samples, eps with a leading sample dim or None) for the operators' schema."""
    samples = 1 if num_samples is None else num_samples
    if isinstance(eps, Tensor) and isinstance(mu, Tensor) and eps.dtype != mu.dtype and mu.dtype.is_floating_point:
        eps = eps.to(torch.promote_types(mu.dtype, eps.dtype))
    if eps is not None and num_samples is None:
        if eps.shape != mu.shape:
            raise ValueError(
                f"aevb_fast: eps must have the shape of mu {tuple(mu.shape)} when num_samples is "
                f"None, got {tuple(eps.shape)}"
            )
        eps = eps.unsqueeze(0)
    return samples, eps


# ---- broadcasting and type promotion, as torch's binary ops do them ----------------------------


def _promoted(op: str, names: tuple[str, ...], values: tuple) -> tuple:
    """The values in one dtype and one shape: torch's type promotion over the tensors (a Python
    number is converted to their dtype, as torch's wrapped numbers are) and torch's broadcasting,
    by ``expand`` (no copy here). The kernels read a broadcast input as it is when it repeats
    whole rows or one value per row (``csrc/op_library.h``: ``broadcast_rows``); any other layout
    is copied to the full shape. None passes
    through, for the operators' checks to name it. The common case, one dtype and one shape
    already, returns at once."""
    first = values[0]
    if not torch.jit.is_tracing() and all(
        isinstance(v, Tensor) and v.dtype == first.dtype and v.shape == first.shape for v in values
    ):
        return values
    if any(v is None for v in values):
        return values
    tensors = [v for v in values if isinstance(v, Tensor)]
    if not tensors:
        raise TypeError(f"aevb_fast.{op}: {names[0]} must be a tensor, got {type(first).__name__}")
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    values = tuple(v.to(dtype) if isinstance(v, Tensor) else torch.as_tensor(v, dtype=dtype, device=tensors[0].device)
                   for v in values)
    try:
        shape = torch.broadcast_shapes(*(v.shape for v in values))
    except RuntimeError:
        shapes = ", ".join(f"{n} {tuple(v.shape)}" for n, v in zip(names, values))
        raise ValueError(f"aevb_fast.{op}: the shapes do not broadcast together: {shapes}") from None
    return tuple(v.expand(shape) for v in values)


def _promoted_dtype(*values):
    """The tensors among values in their promoted dtype (torch's rules), the others as they are."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    if not tensors or all(t.dtype == tensors[0].dtype for t in tensors[1:]):
        return values
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(v.to(dtype) if isinstance(v, Tensor) else v for v in values)


def _latent_arguments(op: str, mu, logvar, prior_mu, prior_logvar) -> tuple:
    """mu, logvar and the prior promoted and broadcast together (no prior: None, None). One of the
    prior's two given alone means the other is 0, as N(prior_mu, 1) or N(0, exp(prior_logvar))."""
    if prior_mu is None and prior_logvar is None:
        return (*_promoted(op, ("mu", "logvar"), (mu, logvar)), None, None)
    values = (mu, logvar, 0.0 if prior_mu is None else prior_mu, 0.0 if prior_logvar is None else prior_logvar)
    return _promoted(op, ("mu", "logvar", "prior_mu", "prior_logvar"), values)


def _event_dims(op: str, name: str, t, event_dims: int | None) -> int:
    """event_dims, required when ``t`` (x, or mu for the KL) has more than two dims: summing only the
    last dim of an image batch (B, C, H, W) returns (B, C, H), a silently wrong shape. One rule for
    every op, so the mistake stops here rather than far away."""
    if event_dims is not None:
        return event_dims
    if isinstance(t, Tensor) and t.dim() > 2:
        raise ValueError(
            f"aevb_fast.{op}: {name} has {t.dim()} dims {tuple(t.shape)}; pass event_dims, the number of "
            f"trailing dims that make one observation (event_dims={t.dim() - 1} sums all but the "
            "first, event_dims=0 keeps every element; event_dims=1, the default for inputs of at most 2 "
            "dims, sums only the last)"
        )
    return 1


def _log_prob_arguments(op: str, x, params: tuple, names: tuple[str, ...], event_dims: int) -> tuple:
    """(x, *params) promoted to one dtype and broadcast together. x keeps its own shape when it
    equals the trailing dims of the parameters' (a leading sample dim of the parameters is
    broadcast over x by the kernels, without a copy); otherwise it is expanded too, to at least
    the event's dims."""
    if not torch.jit.is_tracing() and isinstance(x, Tensor) and all(
        isinstance(p, Tensor) and p.dtype == x.dtype and p.shape == params[0].shape for p in params
    ) and params[0].dim() >= x.dim() >= max(event_dims, 1) and params[0].shape[params[0].dim() - x.dim():] == x.shape:
        return (x, *params)
    if x is None or any(p is None for p in params):
        return (x, *params)
    if not isinstance(x, Tensor):
        raise TypeError(f"aevb_fast.{op}: x must be a tensor, got {type(x).__name__}")
    promoted = _promoted(op, ("x", *names), (x, *params))
    x_rank = max(x.dim(), event_dims, 1) if isinstance(event_dims, int) else x.dim()
    x, params = promoted[0], promoted[1:]
    # x back to its own rank: its broadcast over the parameters' leading dims costs no copy.
    x = x[(0,) * (x.dim() - x_rank)] if x.dim() > x_rank else x
    return (x, *params)


# ---- public functions ------------------------------------------------------------------------


class OperatorLibrary:
    """The public functions over one library of compiled operators: ``torch.ops.aevb_fast``
    (what ``aevb_fast`` exports), or ``torch.ops.aevb_fast_emulated``, the CUDA kernels run on
    CPU tensors by the development build (``aevb_fast.emulated_cuda``). Creating one registers
    the library's fake implementations and autocast rules (its autograd formulas are registered
    in C++)."""

    def __init__(self, namespace: str):
        self._ops = getattr(torch.ops, namespace)
        _register_fakes(namespace)
        _register_autocast(namespace)

    def reparameterize(
        self,
        mu: Tensor,
        logvar: Tensor,
        *,
        eps: Tensor | None = None,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``z = mu + exp(logvar / 2) * eps``, with ``eps ~ N(0, I)`` drawn in the kernel unless given.

        ``num_samples=L`` returns ``z`` of shape ``(L, *mu.shape)``; ``None`` returns ``mu.shape``.
        The backward pass regenerates the noise from the seed instead of storing it. ``mu`` and
        ``logvar`` broadcast and promote as in ``mu + logvar``; the gradient of a broadcast one is
        summed back to its shape.
        """
        mu, logvar = _promoted("reparameterize", ("mu", "logvar"), (mu, logvar))
        samples, eps = _noise_arguments(mu, eps, num_samples)
        if eps is not None and isinstance(mu, Tensor) and eps.dtype != mu.dtype:
            mu, logvar = mu.to(eps.dtype), logvar.to(eps.dtype)
        seed = None if eps is not None else draw_seed(mu.device, generator)
        z = self._ops.reparameterize(mu, logvar, eps, seed, samples)
        return z if num_samples is not None else z.squeeze(0)

    def gaussian_kl(
        self,
        mu: Tensor,
        logvar: Tensor,
        prior_mu: Tensor | None = None,
        prior_logvar: Tensor | None = None,
        *,
        event_dims: int | None = None,
    ) -> Tensor:
        """KL(N(mu, exp(logvar)) || p) summed over the trailing ``event_dims`` dims (``0``: one
        value per element; ``3`` for ``(B, C, H, W)`` latents; required when the inputs, broadcast
        together, have more than 2 dims, else 1), p being N(0, I) or, given
        ``prior_mu`` and ``prior_logvar``, the learned prior N(prior_mu, exp(prior_logvar)) of a
        hierarchical VAE (a missing one of the two is 0). The shape is that of all four broadcast
        together, less its last ``event_dims`` dims; float32 for 16-bit inputs. Gradients flow to
        all four; a prior shared by the batch ``(C, H, W)``, per example ``(B, 1, 1, 1)`` or a
        scalar is read without a copy of the full shape."""
        mu, logvar, prior_mu, prior_logvar = _latent_arguments("gaussian_kl", mu, logvar, prior_mu, prior_logvar)
        event_dims = _event_dims("gaussian_kl", "mu", mu, event_dims)
        return self._ops.gaussian_kl(mu, logvar, prior_mu, prior_logvar, event_dims)

    def sample_and_kl(
        self,
        mu: Tensor,
        logvar: Tensor,
        prior_mu: Tensor | None = None,
        prior_logvar: Tensor | None = None,
        *,
        eps: Tensor | None = None,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
        event_dims: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``reparameterize`` and ``gaussian_kl`` (to N(0, I) or to the given prior, over
        ``event_dims``, required as there) fused in one pass over the parameters: ``(z, kl)``."""
        mu, logvar, prior_mu, prior_logvar = _latent_arguments("sample_and_kl", mu, logvar, prior_mu, prior_logvar)
        event_dims = _event_dims("sample_and_kl", "mu", mu, event_dims)
        samples, eps = _noise_arguments(mu, eps, num_samples)
        if eps is not None and isinstance(mu, Tensor) and eps.dtype != mu.dtype:
            mu, logvar = mu.to(eps.dtype), logvar.to(eps.dtype)
            if prior_mu is not None:
                prior_mu, prior_logvar = prior_mu.to(eps.dtype), prior_logvar.to(eps.dtype)
        seed = None if eps is not None else draw_seed(mu.device, generator)
        z, kl = self._ops.sample_and_kl(mu, logvar, eps, seed, samples, prior_mu, prior_logvar, event_dims)
        return (z if num_samples is not None else z.squeeze(0)), kl

    def bernoulli_log_prob(self, x: Tensor, logits: Tensor, *, event_dims: int | None = None) -> Tensor:
        """``sum(x * logits - softplus(logits))`` over the trailing ``event_dims`` dims (required
        when ``x`` has more than 2 dims; else 1).

        ``logits`` are the decoder's output *before* any sigmoid. A sigmoid's output (the
        probabilities a pytorch/examples-style decoder returns) passed here trains the wrong
        objective without an error: keep the pre-sigmoid output.
        ``x`` may lack leading (sample) dims of ``logits``; it is broadcast without a copy. Other
        shapes broadcast and dtypes promote as in ``x * logits`` (binary ``x`` may be bool or
        uint8); the result is float32 for 16-bit inputs.
        """
        event_dims = _event_dims("bernoulli_log_prob", "x", x, event_dims)
        x, logits = _log_prob_arguments("bernoulli_log_prob", x, (logits,), ("logits",), event_dims)
        return self._ops.bernoulli_log_prob(x, logits, event_dims)

    def gaussian_log_prob(
        self, x: Tensor, mean: Tensor, logvar: Tensor, *, event_dims: int | None = None
    ) -> Tensor:
        """log N(x; mean, diag(exp(logvar))) summed over the trailing ``event_dims`` dims
        (required when ``x`` has more than 2 dims; else 1). ``x``, ``mean`` and ``logvar``
        broadcast and promote together (a fixed variance may be a scalar ``logvar``, a Python
        number or a tensor of shape ``(1, 1, 1, 1)``); gradients are summed back to each input's
        shape. A scalar, per-example ``(B, 1, 1, 1)`` or batch-shared ``(C, H, W)`` input is read
        without a copy of the full shape; other broadcasts (``(C, 1, 1)``) are copied."""
        event_dims = _event_dims("gaussian_log_prob", "x", x, event_dims)
        x, mean, logvar = _log_prob_arguments("gaussian_log_prob", x, (mean, logvar), ("mean", "logvar"), event_dims)
        return self._ops.gaussian_log_prob(x, mean, logvar, event_dims)

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
        ``chunk_size`` at a time (default: about 2**20 logits per chunk on the CPU, 2**24 on a
        GPU), so at most ``chunk_size x D`` logits exist at once. ``reduction``: ``"none"`` (one
        value per row of ``h``, shape ``h.shape[:-1]``; the backward recomputes each chunk's
        logits), ``"sum"`` or ``"mean"`` (a scalar; the gradients are computed in the forward pass
        and the backward only scales them). Gradients flow to ``h``, ``weight`` and ``bias``;
        none to ``x``.
        """
        _check_reduction("linear_bernoulli_log_prob", reduction)
        x, h, weight, bias = _promoted_dtype(x, h, weight, bias)
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
        _check_reduction("linear_gaussian_log_prob", reduction)
        x, h, weight, bias = _promoted_dtype(x, h, weight, bias)
        chunk = _chunk_rows(x, h, weight, chunk_size)
        return self._ops.linear_gaussian_log_prob(x, h, weight, bias, reduction, chunk)


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"aevb_fast.{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


# Elements of logits per chunk by default: a few MB on the CPU (cache-sized, and enough rows for
# MKL's GEMM), more on a GPU, where a large product is what keeps it busy.
DEFAULT_CHUNK_ELEMENTS = {"cpu": 2**20, "cuda": 2**24}


def _chunk_rows(x: Tensor, h: Tensor, weight: Tensor, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"aevb_fast: chunk_size must be a positive int or None, got {chunk_size!r}")
        return chunk_size
    elements = DEFAULT_CHUNK_ELEMENTS.get(h.device.type, 2**20)
    return max(1, elements // max(1, weight.shape[0] if weight.dim() == 2 else 1))


# ---- fake implementations (shapes and dtypes only) -------------------------------------------
# They also check devices: the C++ checks do not run for meta and fake tensors.


def _check_same_device(**tensors: Tensor | None) -> None:
    named = [(name, t) for name, t in tensors.items() if t is not None]
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.device != first.device:
            raise ValueError(
                f"aevb_fast: {name} is on {t.device} but {first_name} is on {first.device}; "
                "they must be on the same device"
            )



def _log_prob_shape(x: Tensor, target: Tensor, event_dims: int, name: str):
    _check_same_device(**{name: target, "x": x})
    if not 0 <= event_dims <= x.dim():
        raise ValueError(
            f"aevb_fast: event_dims must be between 0 and x.dim() = {x.dim()}, got {event_dims}"
        )
    lead = target.dim() - x.dim()
    if lead < 0 or tuple(target.shape[lead:]) != tuple(x.shape):
        raise ValueError(
            f"aevb_fast: x has shape {tuple(x.shape)} but {name} has shape {tuple(target.shape)}; "
            f"x must equal the trailing dimensions of {name}"
        )
    return target.shape[: target.dim() - event_dims]


def _reparameterize_fake(mu, logvar, eps, seed, num_samples):
    _check_same_device(mu=mu, logvar=logvar, eps=eps, seed=seed)
    return mu.new_empty((num_samples, *mu.shape))


def _reparameterize_backward_fake(grad_z, mu, logvar, eps, seed):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape)


def _kl_shape(mu: Tensor, event_dims: int):
    if not 0 <= event_dims <= mu.dim():
        raise ValueError(f"aevb_fast: event_dims must be between 0 and mu.dim() = {mu.dim()}, got {event_dims}")
    return mu.shape[: mu.dim() - event_dims]


def _latent_grads(mu, prior_mu):
    """grad_mu, grad_logvar and the prior's (empty without a prior), contiguous as the kernels'."""
    prior_shape = mu.shape if prior_mu is not None else (0,)
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape), mu.new_empty(prior_shape), mu.new_empty(prior_shape)


def _gaussian_kl_fake(mu, logvar, prior_mu=None, prior_logvar=None, event_dims=1):
    _check_same_device(mu=mu, logvar=logvar, prior_mu=prior_mu, prior_logvar=prior_logvar)
    return mu.new_empty(_kl_shape(mu, event_dims), dtype=accumulate_dtype(mu.dtype))


def _gaussian_kl_backward_fake(grad_kl, mu, logvar, prior_mu=None, prior_logvar=None, event_dims=1):
    return _latent_grads(mu, prior_mu)


def _sample_and_kl_fake(mu, logvar, eps, seed, num_samples, prior_mu=None, prior_logvar=None, event_dims=1):
    _check_same_device(mu=mu, logvar=logvar, eps=eps, seed=seed, prior_mu=prior_mu, prior_logvar=prior_logvar)
    kl = mu.new_empty(_kl_shape(mu, event_dims), dtype=accumulate_dtype(mu.dtype))
    return mu.new_empty((num_samples, *mu.shape)), kl


def _sample_and_kl_backward_fake(grad_z, grad_kl, mu, logvar, eps, seed, prior_mu=None, prior_logvar=None,
                                 event_dims=1):
    return _latent_grads(mu, prior_mu)


def _bernoulli_log_prob_fake(x, logits, event_dims):
    shape = _log_prob_shape(x, logits, event_dims, "logits")
    return logits.new_empty(shape, dtype=accumulate_dtype(logits.dtype))


def _bernoulli_log_prob_backward_fake(grad, x, logits, event_dims):
    return torch.empty_like(logits)


def _gaussian_log_prob_fake(x, mean, logvar, event_dims):
    _check_same_device(mean=mean, logvar=logvar)
    shape = _log_prob_shape(x, mean, event_dims, "mean")
    return mean.new_empty(shape, dtype=accumulate_dtype(mean.dtype))


def _gaussian_log_prob_backward_fake(grad, x, mean, logvar, event_dims):
    return torch.empty_like(mean), torch.empty_like(mean)


def _linear_head_fake(x, h, weight, bias, reduction, chunk_size):
    _check_same_device(h=h, x=x, weight=weight, bias=bias)
    dtype = accumulate_dtype(h.dtype)
    return h.new_empty(h.shape[:-1] if reduction == "none" else (), dtype=dtype)


def _linear_head_backward_fake(grad, x, h, weight, bias, chunk_size):
    # Contiguous, as the kernels return them (empty_like would keep a transposed weight's strides).
    return h.new_empty(h.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


def _linear_head_with_grads_fake(x, h, weight, bias, reduction, chunk_size):
    _check_same_device(h=h, x=x, weight=weight, bias=bias)
    total = h.new_empty((), dtype=accumulate_dtype(h.dtype))
    return total, h.new_empty(h.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


_FAKES = {
    "reparameterize": _reparameterize_fake,
    "reparameterize_backward": _reparameterize_backward_fake,
    "gaussian_kl": _gaussian_kl_fake,
    "gaussian_kl_backward": _gaussian_kl_backward_fake,
    "sample_and_kl": _sample_and_kl_fake,
    "sample_and_kl_backward": _sample_and_kl_backward_fake,
    "bernoulli_log_prob": _bernoulli_log_prob_fake,
    "bernoulli_log_prob_backward": _bernoulli_log_prob_backward_fake,
    "gaussian_log_prob": _gaussian_log_prob_fake,
    "gaussian_log_prob_backward": _gaussian_log_prob_backward_fake,
    **{name: _linear_head_fake for name in LINEAR_HEAD_OPS},
    **{f"{name}_backward": _linear_head_backward_fake for name in LINEAR_HEAD_OPS},
    **{f"{name}_with_grads": _linear_head_with_grads_fake for name in LINEAR_HEAD_OPS},
}


def _register_fakes(namespace: str) -> None:
    for name, fake in _FAKES.items():
        torch.library.register_fake(f"{namespace}::{name}", fake)


# Under torch.autocast the losses run in float32, as torch runs its own (binary_cross_entropy_with_
# logits, mse_loss, ...): their 16-bit inputs are cast up, and the gradients flow back in 16 bits.
# The sampling ops are left alone (z keeps the dtype of mu and logvar, promoted); the linear heads
# promote h, weight and x to one dtype as they are given.
AUTOCAST_FLOAT32_OPS = ("gaussian_kl", "bernoulli_log_prob", "gaussian_log_prob")


def _register_autocast(namespace: str) -> None:
    for device_type in ("cpu", "cuda"):
        if torch.amp.is_autocast_available(device_type):
            for name in AUTOCAST_FLOAT32_OPS:
                torch.library.register_autocast(f"{namespace}::{name}", device_type, torch.float32)


# ---- the library that aevb_fast exports --------------------------------------------------------

_library = OperatorLibrary("aevb_fast")
reparameterize = _library.reparameterize
gaussian_kl = _library.gaussian_kl
sample_and_kl = _library.sample_and_kl
bernoulli_log_prob = _library.bernoulli_log_prob
gaussian_log_prob = _library.gaussian_log_prob
linear_bernoulli_log_prob = _library.linear_bernoulli_log_prob
linear_gaussian_log_prob = _library.linear_gaussian_log_prob
