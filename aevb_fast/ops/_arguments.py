"""What every operator family's wrapper and fakes share: the reduced outputs' dtype, the noise
seed, torch's broadcasting and type promotion, ``event_dims``, and the fakes' device and shape
checks (the C++ checks do not run for meta and fake tensors)."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

# How a log-likelihood's rows are reduced: kept, summed or averaged (whose gradients the forward
# pass makes, so that loss.backward() on the sum moves no memory).
REDUCTIONS = ("none", "sum", "mean")


def check_reduction(op: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"aevb_fast.{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduced_shape(rows_shape, reduction: str):
    return rows_shape if reduction == "none" else ()


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of reduced outputs (KL, log-likelihoods): float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- noise -----------------------------------------------------------------------------------


def check_int(op: str, name: str, value) -> None:
    """An int argument (event_dims, num_samples) given as another type is this one-line error, not
    the schema's multi-line cast message."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, torch.SymInt)):  # numpy ints too
        raise TypeError(f"aevb_fast.{op}: {name} must be an int, got {type(value).__name__} {value!r}")


def check_generator(op: str, generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"aevb_fast.{op}: generator must be a torch.Generator or None, got {type(generator).__name__}")


def draw_seed(device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    """The kernel's RNG seed, [key, offset], drawn from torch's generator on ``device``.

    Drawing it with a torch random op means that ``torch.manual_seed`` reproduces a run, that a
    ``generator`` is honoured, and that compiled graphs and CUDA graphs draw a fresh seed (hence
    fresh noise) at every call or replay.
    """
    return torch.randint(0, 2**62, (2,), dtype=torch.int64, device=device, generator=generator)


def noise_arguments(op: str, mu: Tensor, eps: Tensor | None, num_samples: int | None, generator):
    """(samples, eps with a leading sample dim or None) for the operators' schema."""
    if num_samples is not None:
        check_int(op, "num_samples", num_samples)
    check_generator(op, generator)
    samples = 1 if num_samples is None else num_samples
    if isinstance(eps, Tensor) and isinstance(mu, Tensor) and eps.dtype != mu.dtype and mu.dtype.is_floating_point:
        eps = eps.to(torch.promote_types(mu.dtype, eps.dtype))
    if eps is not None and num_samples is None:
        if eps.shape != mu.shape:
            raise ValueError(
                f"aevb_fast.{op}: eps must have the shape of mu {tuple(mu.shape)} when num_samples is "
                f"None, got {tuple(eps.shape)}"
            )
        eps = eps.unsqueeze(0)
    return samples, eps


# ---- broadcasting and type promotion, as torch's binary ops do them ----------------------------


def promoted(op: str, names: tuple[str, ...], values: tuple) -> tuple:
    """The values in one dtype and one shape: torch's type promotion over the tensors (a Python
    number is converted to their dtype, as torch's wrapped numbers are) and torch's broadcasting,
    by ``expand`` (no copy here). The kernels read a broadcast input as it is when it repeats
    whole rows or one value per row (``csrc/op_library.h``: ``broadcast_rows``); any other layout
    is copied to the full shape. None passes
    through, for the operators' checks to name it. The common case, one dtype and one shape
    already, returns at once."""
    first = values[0]
    # dim() first: under torch.export, comparing sizes of different ranks element by element adds
    # guards between unrelated dims (a dynamic batch != a sample count).
    if not torch.jit.is_tracing() and all(
        isinstance(v, Tensor) and v.dtype == first.dtype and v.dim() == first.dim() and v.shape == first.shape
        for v in values
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
    values = tuple(
        v.to(dtype) if isinstance(v, Tensor) else torch.as_tensor(v, dtype=dtype, device=tensors[0].device)
        for v in values
    )
    try:
        shape = torch.broadcast_shapes(*(v.shape for v in values))
    except RuntimeError:
        shapes = ", ".join(f"{n} {tuple(v.shape)}" for n, v in zip(names, values))
        raise ValueError(f"aevb_fast.{op}: the shapes do not broadcast together: {shapes}") from None
    return tuple(v.expand(shape) for v in values)


def promoted_dtype(*values):
    """The tensors among values in their promoted dtype (torch's rules), the others as they are."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    if not tensors or all(t.dtype == tensors[0].dtype for t in tensors[1:]):
        return values
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(v.to(dtype) if isinstance(v, Tensor) else v for v in values)


def latent_arguments(op: str, mu, logvar, prior_mu, prior_logvar) -> tuple:
    """mu, logvar and the prior promoted and broadcast together (no prior: None, None). One of the
    prior's two given alone means the other is 0, as N(prior_mu, 1) or N(0, exp(prior_logvar))."""
    if prior_mu is None and prior_logvar is None:
        return (*promoted(op, ("mu", "logvar"), (mu, logvar)), None, None)
    values = (mu, logvar, 0.0 if prior_mu is None else prior_mu, 0.0 if prior_logvar is None else prior_logvar)
    return promoted(op, ("mu", "logvar", "prior_mu", "prior_logvar"), values)


def required_event_dims(op: str, name: str, t, event_dims: int | None) -> int:
    """event_dims, required when ``t`` (x, or mu for the KL) has more than two dims: summing only the
    last dim of an image batch (B, C, H, W) returns (B, C, H), a silently wrong shape. One rule for
    every op, so the mistake stops here rather than far away."""
    if event_dims is not None:
        check_int(op, "event_dims", event_dims)
        return event_dims
    if isinstance(t, Tensor) and t.dim() > 2:
        raise ValueError(
            f"aevb_fast.{op}: {name} has {t.dim()} dims {tuple(t.shape)}; pass event_dims, the number of "
            f"trailing dims that make one observation (event_dims={t.dim() - 1} sums all but the "
            "first, event_dims=0 keeps every element; event_dims=1, the default for inputs of at most 2 "
            "dims, sums only the last)"
        )
    return 1


def log_prob_arguments(op: str, x, params: tuple, names: tuple[str, ...], event_dims: int) -> tuple:
    """(x, *params) promoted to one dtype and broadcast together. x keeps its own shape when it
    equals the trailing dims of the parameters' (a leading sample dim of the parameters is
    broadcast over x by the kernels, without a copy); otherwise it is expanded too, to at least
    the event's dims."""
    if (
        not torch.jit.is_tracing()
        and isinstance(x, Tensor)
        and all(isinstance(p, Tensor) and p.dtype == x.dtype and p.shape == params[0].shape for p in params)
        and params[0].dim() >= x.dim() >= max(event_dims, 1)
        and params[0].shape[params[0].dim() - x.dim() :] == x.shape
    ):
        return (x, *params)
    if x is None or any(p is None for p in params):
        return (x, *params)
    if not isinstance(x, Tensor):
        raise TypeError(f"aevb_fast.{op}: x must be a tensor, got {type(x).__name__}")
    values = promoted(op, ("x", *names), (x, *params))
    x_rank = max(x.dim(), event_dims, 1) if isinstance(event_dims, int) else x.dim()
    broadcast_x, params = values[0], values[1:]
    # x back to its own rank: its broadcast over the parameters' leading dims costs no copy. An
    # empty batch has no element 0 to take: x itself then, in the promoted dtype. (Not asked while
    # a JIT traces: its sizes are tensors there, and a branch on one warns.)
    if broadcast_x.dim() > x_rank:
        lead = (0,) * (broadcast_x.dim() - x_rank)
        if not torch.jit.is_tracing() and broadcast_x.numel() == 0:
            x = x.to(broadcast_x.dtype).expand(broadcast_x.shape[len(lead) :])
        else:
            x = broadcast_x[lead]
    else:
        x = broadcast_x
    return (x, *params)


def check_same_device(**tensors: Tensor | None) -> None:
    named = [(name, t) for name, t in tensors.items() if t is not None]
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.device != first.device:
            raise ValueError(
                f"aevb_fast: {name} is on {t.device} but {first_name} is on {first.device}; "
                "they must be on the same device"
            )


def log_prob_shape(x: Tensor, target: Tensor, event_dims: int, name: str):
    check_same_device(**{name: target, "x": x})
    if not 0 <= event_dims <= x.dim():
        raise ValueError(f"aevb_fast: event_dims must be between 0 and x.dim() = {x.dim()}, got {event_dims}")
    lead = target.dim() - x.dim()
    if lead < 0 or tuple(target.shape[lead:]) != tuple(x.shape):
        raise ValueError(
            f"aevb_fast: x has shape {tuple(x.shape)} but {name} has shape {tuple(target.shape)}; "
            f"x must equal the trailing dimensions of {name}"
        )
    return target.shape[: target.dim() - event_dims]
