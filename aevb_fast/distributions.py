"""``torch.distributions`` classes over the fused operators, for VAE code written with
distributions instead of loose tensor functions::

    q = DiagonalNormal(mu, logvar)                    # event_shape (J,)
    z = q.rsample((5,))                               # fused sampling: noise drawn in the kernel
    kl = kl_divergence(q, StandardNormal(q.event_shape, device=mu.device))  # the fused KL
    ll = BernoulliLogits(logits).log_prob(x)          # the fused log-likelihood

They are ``torch.distributions.Distribution`` subclasses: ``batch_shape``, ``event_shape``,
``expand`` and ``validate_args`` behave as torch's do. Where they differ from torch's
``Normal``/``Bernoulli``: a diagonal normal is parameterised by its log-variance, the event
dims are part of the class (no ``Independent`` wrapper needed), and reduced results of bfloat16
and float16 inputs (``log_prob``, the KL, ``entropy``) are float32, as the operators return them. For Pyro,
use the same classes from ``aevb_fast.contrib.pyro``.
"""

from __future__ import annotations

import math
import numbers as numbers_
import os
import sys
import warnings

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints, register_kl
from torch.distributions.utils import broadcast_all

from . import ops

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _check_event_dims(event_dims: int, tensor: Tensor, name: str, cls: str) -> int:
    if isinstance(event_dims, bool) or not isinstance(event_dims, int) or not 0 <= event_dims <= tensor.dim():
        raise ValueError(
            f"{cls}: event_dims must be an int between 0 and {name}.dim() = {tensor.dim()}, got {event_dims!r}"
        )
    return event_dims


def _sample_count(sample_shape) -> tuple[torch.Size, int]:
    sample_shape = torch.Size(sample_shape)
    return sample_shape, sample_shape.numel()


def _per_variable_only(cls: str, method: str, normal: str) -> NotImplementedError:
    """What a user of torch's Normal reaches for and a vector-valued event does not have."""
    return NotImplementedError(
        f"{cls} has no {method}: its event is a vector; for one variable at a time use "
        f"torch.distributions.{normal}.{method}(value)"
    )


def _caller_stacklevel() -> int:
    """warnings.warn's stacklevel of the first frame outside this package and Pyro's distribution
    classes (whose metaclass adds a frame): the user's line, so that each place warns once."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE_DIR) or "pyro/distributions" in frame.f_code.co_filename
    ):
        frame, level = frame.f_back, level + 1
    return level


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def look_like_probabilities(logits: Tensor) -> bool:
    """Whether a decoder's output passed as logits looks like probabilities (a final sigmoid): at
    least 64 values, all in [0, 1], not all equal. Real logits spread on both sides of 0; a handful
    may sit in [0, 1] by chance, hundreds will not; a zero-initialised output layer's are all 0."""
    if logits.numel() < 64:
        return False
    low, high = torch.aminmax(logits.detach())
    return bool(low >= 0) and bool(high <= 1) and bool(high > low)


class DiagonalNormal(Distribution):
    """N(loc, diag(exp(logvar))): the encoder's q(z | x) of a VAE, over the last ``event_dims``
    dims of ``loc`` (default 1: a vector of J latents).

    ``rsample(sample_shape)`` draws ``z = loc + exp(logvar / 2) * eps`` with the noise drawn in
    the kernel from torch's generator (``torch.manual_seed`` reproduces it) and regenerated in the
    backward pass, never stored. ``log_prob`` runs the fused Gaussian log-density, so this class
    is also the Gaussian likelihood with a learned log-variance, for data of any event rank
    (``DiagonalNormal(mean, logvar, event_dims=3).log_prob(images)`` for C x H x W images).
    ``kl_divergence(q, StandardNormal(...))`` and ``kl_divergence(q, DiagonalNormal(...))`` (a
    learned prior, as in a hierarchical VAE) run the fused KL over the event dims.
    """

    arg_constraints = {"loc": constraints.real, "logvar": constraints.real}
    has_rsample = True

    def __init__(self, loc: Tensor, logvar: Tensor | float, event_dims: int = 1, validate_args: bool | None = None):
        # One of them may be a Python number (a fixed log-variance), as the ops and Normal take it.
        numbers = [isinstance(v, numbers_.Real) and not isinstance(v, bool) for v in (loc, logvar)]
        if not all(isinstance(v, Tensor) or n for v, n in zip((loc, logvar), numbers)) or all(numbers):
            raise TypeError(
                f"DiagonalNormal: loc and logvar must be tensors (one may be a Python number), got "
                f"{type(loc).__name__} and {type(logvar).__name__}"
            )
        loc, logvar = (float(v) if n else v for v, n in zip((loc, logvar), numbers))  # numpy's too
        self.loc, self.logvar = broadcast_all(loc, logvar)
        self._event_dims = _check_event_dims(event_dims, self.loc, "loc", "DiagonalNormal")
        split = self.loc.dim() - event_dims
        super().__init__(self.loc.shape[:split], self.loc.shape[split:], validate_args=validate_args)
        if self._validate_args and not numbers[1]:
            self._warn_if_scales(logvar)

    def _warn_if_scales(self, logvar: Tensor) -> None:
        # torch's Normal takes a scale second, this class a log-variance: DiagonalNormal(*net(h))
        # of a network that gives (loc, scale) trains another model without an error. A scale is
        # positive everywhere; a log-variance is so only if every variance is above 1 (a fixed
        # one, all equal, is let through). Normal(0, 1) ported as DiagonalNormal(zeros, ones) is
        # a prior of variance e: a log-variance of exactly 1 everywhere is warned at any size.
        if logvar.numel() == 0:
            return
        low, high = torch.aminmax(logvar.detach())
        if bool((low == 1) & (high == 1)):
            warnings.warn(
                "DiagonalNormal: logvar is 1 everywhere, a variance of e = 2.72: if 1 is the scale "
                "torch's Normal takes (Normal(0, 1)), pass logvar = 0, or use StandardNormal as the prior",
                stacklevel=_caller_stacklevel(),
            )
        # As given: a per-channel (C, 1, 1) one is too few to tell.
        elif logvar.numel() >= 64 and bool((low > 0) & (high > low)):
            warnings.warn(
                "DiagonalNormal: every logvar is > 0 (every variance above 1): if these are standard "
                "deviations (the scale torch's Normal takes), pass logvar = 2 * torch.log(scale)",
                stacklevel=_caller_stacklevel(),
            )

    @property
    def support(self):
        return constraints.independent(constraints.real, self._event_dims)

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def mode(self) -> Tensor:
        return self.loc

    @property
    def stddev(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def variance(self) -> Tensor:
        return torch.exp(self.logvar)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiagonalNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        shape = batch_shape + self.event_shape
        new.loc, new.logvar, new._event_dims = self.loc.expand(shape), self.logvar.expand(shape), self._event_dims
        super(DiagonalNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        sample_shape, count = _sample_count(sample_shape)
        if count == 0:  # the operator draws at least one sample
            return self.loc.expand(sample_shape + self.loc.shape)
        # A scalar latent (event_dims=0, 0-dim loc) as one element: the operator takes at least one dim.
        loc, logvar = (self.loc, self.logvar) if self.loc.dim() else (self.loc.reshape(1), self.logvar.reshape(1))
        if not sample_shape:
            return ops.reparameterize(loc, logvar).reshape(self.loc.shape)
        z = ops.reparameterize(loc, logvar, num_samples=count)
        return z.reshape(sample_shape + self.loc.shape)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args and (
            not isinstance(value, Tensor) or value.numel()
        ):  # torch's check fails on empty tensors
            self._validate_sample(value)
        # log N(value; loc, v) = log N(loc; value, v): when value has leading sample dims that loc
        # lacks, loc takes the operator's broadcast x slot and value the mean's, so loc is not copied.
        # (Not while a JIT traces: comparing shapes there warns, and the operator broadcasts anyway.)
        if (
            not torch.jit.is_tracing()
            and isinstance(value, Tensor)
            and value.dim() > self.loc.dim()
            and value.dtype == self.loc.dtype
            and value.shape[value.dim() - self.loc.dim() :] == self.loc.shape
        ):
            return ops.gaussian_log_prob(self.loc, value, self.logvar, event_dims=self._event_dims)
        if _all_scalars(value, self.loc):  # a scalar latent's own draw: the operator takes at least one dim
            return ops.gaussian_log_prob(value.reshape(1), self.loc.reshape(1), self.logvar.reshape(1)).reshape(())
        return ops.gaussian_log_prob(value, self.loc, self.logvar, event_dims=self._event_dims)

    def cdf(self, value: Tensor) -> Tensor:
        raise _per_variable_only("DiagonalNormal", "cdf", "Normal(q.loc, q.stddev)")

    def icdf(self, value: Tensor) -> Tensor:
        raise _per_variable_only("DiagonalNormal", "icdf", "Normal(q.loc, q.stddev)")

    def entropy(self) -> Tensor:
        per_element = 0.5 + _HALF_LOG_2PI + 0.5 * self.logvar.to(_summed_dtype(self.logvar.dtype, self._event_dims))
        return per_element.sum(tuple(range(-self._event_dims, 0))) if self._event_dims else per_element

    def _flat_event(self) -> tuple[Tensor, Tensor]:
        """loc and logvar with the event dims flattened into one (the fused KL sums the last dim)."""
        shape = self.batch_shape + (self.event_shape.numel(),)
        return self.loc.reshape(shape), self.logvar.reshape(shape)


class StandardNormal(Distribution):
    """N(0, I) over ``event_shape``: the VAE's prior p(z). ``batch_shape`` is empty unless given
    (or made by ``expand``, as a Pyro plate does); ``device`` and ``dtype`` are those of its
    samples."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(
        self, event_shape, batch_shape=torch.Size(), *, device=None, dtype=None, validate_args: bool | None = None
    ):
        if isinstance(event_shape, int):
            event_shape = (event_shape,)
        try:
            event_shape, batch_shape = torch.Size(event_shape), torch.Size(batch_shape)
        except TypeError:
            raise TypeError(
                f"StandardNormal: event_shape and batch_shape must be sizes, got {event_shape!r} and {batch_shape!r}"
            ) from None
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def __repr__(self) -> str:
        batch = f", batch_shape={tuple(self.batch_shape)}" if self.batch_shape else ""
        return f"StandardNormal(event_shape={tuple(self.event_shape)}{batch})"

    @property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def _full(self, value: float) -> Tensor:
        return torch.full(self.batch_shape + self.event_shape, value, device=self.device, dtype=self.dtype)

    @property
    def mean(self) -> Tensor:
        return self._full(0.0)

    @property
    def mode(self) -> Tensor:
        return self._full(0.0)

    @property
    def stddev(self) -> Tensor:
        return self._full(1.0)

    @property
    def variance(self) -> Tensor:
        return self._full(1.0)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        # As a tensor expands: the batch shape's dims of size 1 may grow, the others must stay.
        if len(batch_shape) < len(self.batch_shape) or any(
            old not in (1, new) for old, new in zip(reversed(self.batch_shape), reversed(batch_shape))
        ):
            raise RuntimeError(  # as a tensor's expand (and so DiagonalNormal's) raises
                f"StandardNormal.expand: batch_shape {tuple(self.batch_shape)} cannot expand to {tuple(batch_shape)}"
            )
        new = self._get_checked_instance(StandardNormal, _instance)
        new.device, new.dtype = self.device, self.dtype
        super(StandardNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        return torch.randn(self._extended_shape(sample_shape), device=self.device, dtype=self.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args and (
            not isinstance(value, Tensor) or value.numel()
        ):  # torch's check fails on empty tensors
            self._validate_sample(value)
        dims = len(self.event_shape)
        value = value.to(_summed_dtype(value.dtype, dims))  # 16-bit sums in float32, as DiagonalNormal's
        per_element = -0.5 * value.square() - _HALF_LOG_2PI
        # A value broadcasts against the batch and event shapes, as torch's Independent(Normal)
        # does: a (4, 1) value counts each of 20 events' elements, a (4, 10) one is refused. By
        # broadcast_tensors, which a JIT traces without comparing shapes on the host.
        target = per_element.new_zeros(()).expand(self.batch_shape + self.event_shape)
        if not torch.jit.is_tracing():  # the message (comparing shapes while a JIT traces warns)
            try:
                torch.broadcast_shapes(per_element.shape, target.shape)
            except RuntimeError:
                raise ValueError(
                    f"StandardNormal.log_prob: value of shape {tuple(value.shape)} does not broadcast "
                    f"with batch_shape {tuple(self.batch_shape)} + event_shape "
                    f"{tuple(self.event_shape)}"
                ) from None
        per_element = torch.broadcast_tensors(per_element, target)[0]
        log_prob = per_element.sum(tuple(range(-dims, 0))) if dims else per_element
        return log_prob.expand(torch.broadcast_shapes(log_prob.shape, self.batch_shape))

    def cdf(self, value: Tensor) -> Tensor:
        raise _per_variable_only("StandardNormal", "cdf", "Normal(0.0, 1.0)")

    def icdf(self, value: Tensor) -> Tensor:
        raise _per_variable_only("StandardNormal", "icdf", "Normal(0.0, 1.0)")

    def entropy(self) -> Tensor:
        dtype = _summed_dtype(self.dtype, len(self.event_shape))
        return torch.full(
            self.batch_shape, (0.5 + _HALF_LOG_2PI) * self.event_shape.numel(), device=self.device, dtype=dtype
        )


class _BinaryOrUnitInterval(constraints.Constraint):
    """BernoulliLogits' support: discrete, as torch's Bernoulli's is (so that inference which needs
    a continuous site, Pyro's autoguides and NUTS, refuses a latent BernoulliLogits site rather
    than fitting values in (0, 1) to it), while validation lets grey levels in [0, 1] through (the
    likelihood of intensities, as the pytorch/examples VAE takes it)."""

    is_discrete = True

    def check(self, value):
        return (value >= 0) & (value <= 1)

    def __repr__(self):
        return "BinaryOrUnitInterval()"


_binary_or_unit_interval = _BinaryOrUnitInterval()


class BernoulliLogits(Distribution):
    """Independent Bernoulli variables with the given logits over the last ``event_dims`` dims
    (default 1: a vector of D pixels): the VAE's likelihood p(x | z) for binary data.

    ``logits`` are the decoder's output *before* any sigmoid. A decoder that ends in a sigmoid
    (as the pytorch/examples VAE does) gives probabilities; passed as logits they train the
    wrong objective with no error. Keep the pre-sigmoid output: ``BernoulliLogits(decoder_logits)``,
    and apply ``torch.sigmoid`` only to show images. With ``validate_args`` (torch's default,
    until the first ``torch.compile`` in the process turns the default off), logits that all lie
    in [0, 1] get a warning: probably probabilities.

    ``log_prob(x)`` runs the fused log-likelihood ``sum(x * logits - softplus(logits))``, with
    ``x`` broadcast over leading sample dims of ``logits`` without a copy. ``x`` may be binary or
    intensities in [0, 1] (then ``log_prob`` is minus the binary cross-entropy, as in the
    pytorch/examples VAE, not a normalised density); ``validate_args`` checks ``0 <= x <= 1``.
    """

    arg_constraints = {"logits": constraints.real}
    has_enumerate_support = False

    def __init__(self, logits: Tensor, event_dims: int = 1, validate_args: bool | None = None):
        if not isinstance(logits, Tensor):
            raise TypeError(f"BernoulliLogits: logits must be a tensor, got {type(logits).__name__}")
        self.logits = logits
        self._event_dims = _check_event_dims(event_dims, logits, "logits", "BernoulliLogits")
        split = logits.dim() - event_dims
        super().__init__(logits.shape[:split], logits.shape[split:], validate_args=validate_args)
        if self._validate_args:
            self._warn_if_probabilities()

    def _warn_if_probabilities(self) -> None:
        # A warning, not an error: an untrained decoder's logits can lie in [0, 1] too (18% of the
        # README's convolutional VAE's initialisations: small weights about a bias in (0, 1)).
        if look_like_probabilities(self.logits):
            warnings.warn(
                "BernoulliLogits: every one of the logits lies in [0, 1]: if these are probabilities "
                "(a decoder ending in a sigmoid), the model trains the wrong objective; pass the output "
                "before the sigmoid",
                stacklevel=_caller_stacklevel(),
            )

    @property
    def support(self):
        return constraints.independent(_binary_or_unit_interval, self._event_dims)

    @property
    def probs(self) -> Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mean(self) -> Tensor:
        return self.probs

    @property
    def mode(self) -> Tensor:
        # As torch's Bernoulli: NaN where both values are as likely (logit 0).
        mode = (self.logits > 0).to(self.logits.dtype)
        return mode.masked_fill(self.logits == 0, float("nan"))

    @property
    def variance(self) -> Tensor:
        p = self.probs
        return p * (1 - p)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(BernoulliLogits, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits, new._event_dims = self.logits.expand(batch_shape + self.event_shape), self._event_dims
        super(BernoulliLogits, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            return torch.bernoulli(self.probs.expand(self._extended_shape(sample_shape)))

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        raise NotImplementedError(
            "BernoulliLogits has no rsample: its samples are 0s and 1s, with no gradient to the logits; "
            "sample() draws them, torch.distributions.RelaxedBernoulli gives a differentiable relaxation"
        )

    def enumerate_support(self, expand: bool = True) -> Tensor:
        n = self.event_shape.numel()
        raise NotImplementedError(
            f"BernoulliLogits does not enumerate its support: its event is {n} variable{'s' * (n != 1)} "
            f"(2^{n} values); torch.distributions.Bernoulli(logits=...) enumerates one variable at a time"
        )

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args and (
            not isinstance(value, Tensor) or value.numel()
        ):  # torch's check fails on empty tensors
            self._validate_sample(value)
        if _all_scalars(value, self.logits):  # one variable: the operator takes at least one dim
            return ops.bernoulli_log_prob(value.reshape(1), self.logits.reshape(1)).reshape(())
        return ops.bernoulli_log_prob(value, self.logits, event_dims=self._event_dims)

    def entropy(self) -> Tensor:
        # H = softplus(l) - l * sigmoid(l) per variable, summed over the event
        logits = self.logits.to(_summed_dtype(self.logits.dtype, self._event_dims))
        per_element = torch.nn.functional.softplus(logits) - logits * torch.sigmoid(logits)
        return per_element.sum(tuple(range(-self._event_dims, 0))) if self._event_dims else per_element


def _summed_dtype(dtype: torch.dtype, event_dims: int) -> torch.dtype:
    """The dtype of a sum over an event: float32 for bfloat16 and float16, as the operators'
    reduced results are (a sum of 784 terms in bfloat16 keeps 3 digits)."""
    return torch.float32 if event_dims and dtype in (torch.bfloat16, torch.float16) else dtype


def _all_scalars(value, parameter: Tensor) -> bool:
    """A 0-dim value of a 0-dim parameter (event_dims=0): one variable, which the operators
    (taking at least one dim) see as shape (1,)."""
    return isinstance(value, Tensor) and value.dim() == 0 and parameter.dim() == 0


def _check_events(q: Distribution, p: Distribution) -> None:
    # Skipped while a JIT traces: its shapes are tensors there, and comparing them warns.
    if not torch.jit.is_tracing() and q.event_shape != p.event_shape:
        raise ValueError(
            f"kl_divergence: q has event_shape {tuple(q.event_shape)} but p has "
            f"{tuple(p.event_shape)}; they must be equal"
        )


@register_kl(DiagonalNormal, StandardNormal)
def _kl_diagonal_standard(q: DiagonalNormal, p: StandardNormal) -> Tensor:
    """The fused KL(q || N(0, I)), one value per batch element of q and p broadcast together."""
    _check_events(q, p)
    kl = ops.gaussian_kl(*q._flat_event(), event_dims=1)
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))


@register_kl(DiagonalNormal, DiagonalNormal)
def _kl_diagonal_diagonal(q: DiagonalNormal, p: DiagonalNormal) -> Tensor:
    """The fused KL(q || p) to a learned diagonal prior (a hierarchical VAE's layer), one value per
    batch element of q and p broadcast together."""
    _check_events(q, p)
    params = (q.loc, q.logvar, p.loc, p.logvar)
    if all(t.dim() == 0 for t in params):  # scalar latents: the operator takes at least one dim
        return ops.gaussian_kl(*(t.reshape(1) for t in params), event_dims=0).reshape(())
    return ops.gaussian_kl(*params, event_dims=len(q.event_shape))


# torch's own diagonal normals: Normal (one variable per element) and Independent(Normal, n).
def _torch_normal(d: Distribution, event_dims: int) -> tuple[Tensor, Tensor] | None:
    """(loc, logvar) of torch's Normal with event_dims event dims (Independent(Normal, n), or a
    bare Normal for 0), else None."""
    if isinstance(d, torch.distributions.Independent):
        if d.reinterpreted_batch_ndims != event_dims or not isinstance(d.base_dist, torch.distributions.Normal):
            return None
        d = d.base_dist
    elif not isinstance(d, torch.distributions.Normal) or event_dims != 0:
        return None
    return d.loc, 2 * torch.log(d.scale)


def _kl_with_a_torch_normal(q_loc, q_logvar, p_loc, p_logvar, event_dims: int, device: torch.device) -> Tensor:
    # torch's Normal(0., 1.) holds CPU scalars, which its own KL takes beside CUDA tensors (as
    # arithmetic does); the operator takes one device: 0-dim ones go to the others' (or to device).
    given = (q_loc, q_logvar, p_loc, p_logvar)
    device = next((t.device for t in given if t.dim()), device)
    params = [t.to(device) if t.dim() == 0 else t for t in given]
    # At least one dim for the operator: scalar variables as shape (1,).
    params = torch.broadcast_tensors(*params)
    if params[0].dim() == 0:
        return ops.gaussian_kl(*(t.reshape(1) for t in params), event_dims=0).reshape(())
    return ops.gaussian_kl(*params, event_dims=event_dims)


def _not_a_diagonal_normal(q: Distribution, p: Distribution) -> NotImplementedError:
    return NotImplementedError(
        f"kl_divergence: no KL between {type(q).__name__} and {type(p).__name__} with event_shape "
        f"{tuple(q.event_shape)} and {tuple(p.event_shape)}: a torch normal takes part as Normal (event_dims=0) "
        "or Independent(Normal(...), n) with n the event dims of the other"
    )


@register_kl(DiagonalNormal, torch.distributions.Independent)
@register_kl(DiagonalNormal, torch.distributions.Normal)
def _kl_diagonal_torch(q: DiagonalNormal, p: Distribution) -> Tensor:
    """The fused KL(q || p) to torch's Normal or Independent(Normal): a prior written with
    torch.distributions."""
    other = _torch_normal(p, q._event_dims)
    if other is None:
        raise _not_a_diagonal_normal(q, p)
    _check_events(q, p)
    return _kl_with_a_torch_normal(q.loc, q.logvar, *other, q._event_dims, q.loc.device)


@register_kl(torch.distributions.Independent, DiagonalNormal)
@register_kl(torch.distributions.Normal, DiagonalNormal)
def _kl_torch_diagonal(q: Distribution, p: DiagonalNormal) -> Tensor:
    """The fused KL(q || p) of torch's Normal or Independent(Normal) to a DiagonalNormal."""
    other = _torch_normal(q, p._event_dims)
    if other is None:
        raise _not_a_diagonal_normal(q, p)
    _check_events(q, p)
    return _kl_with_a_torch_normal(*other, p.loc, p.logvar, p._event_dims, p.loc.device)


@register_kl(torch.distributions.Independent, StandardNormal)
@register_kl(torch.distributions.Normal, StandardNormal)
def _kl_torch_standard(q: Distribution, p: StandardNormal) -> Tensor:
    """The fused KL(q || N(0, I)) of torch's Normal or Independent(Normal): a guide left as
    torch's beside this prior (else Pyro's TraceMeanField_ELBO falls back to a sampled KL)."""
    other = _torch_normal(q, len(p.event_shape))
    if other is None:
        raise _not_a_diagonal_normal(q, p)
    _check_events(q, p)
    loc, logvar = torch.broadcast_tensors(*other)
    if loc.dim() == 0:  # one scalar variable: the operator takes at least one dim
        kl = ops.gaussian_kl(loc.reshape(1), logvar.reshape(1), event_dims=0).reshape(())
    else:
        kl = ops.gaussian_kl(loc, logvar, event_dims=len(p.event_shape))
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))
