"""The variational lower bound on the fused operators (Kingma & Welling, 2013, section 2.3).

``elbo(x, mu, logvar, decoder, ...)`` estimates, per data point, the evidence lower bound of a
VAE whose encoder gave ``mu``, ``logvar`` for ``x``:

- ``estimator="analytic"`` (SGVB estimator B): ``(1/L) sum_l log p(x|z_l) - beta * KL(q || p)``,
  the KL in closed form;
- ``estimator="generic"`` (SGVB estimator A):
  ``(1/L) sum_l [log p(x|z_l) + beta * (log p(z_l) - log q(z_l|x))]``;
- ``estimator="iwae"``: the importance-weighted bound (Burda et al., 2016) with K = L samples,
  ``logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K``; with L = 1 it equals the
  generic estimator, and it tightens as L grows.

The decoder runs once, on all ``L * B`` samples: it takes ``z`` of shape ``(L * B, J)`` and
returns the logits (``likelihood="bernoulli"``) or a ``(mean, logvar)`` pair
(``likelihood="gaussian"``) of shape ``(L * B, *x.shape[1:])``. Logits come before any sigmoid:
a decoder that ends in a sigmoid returns probabilities, and those taken as logits train the
wrong objective without an error.

The fused head: a decoder that declares ``fusable_head = likelihood`` and has ``features(z)``
(its last hidden layer) and ``head`` (its final ``nn.Linear``), so that ``decoder(z)`` is
``head(features(z))`` read as logits, or for ``"gaussian"`` chunked into a mean pre-activation
(through a sigmoid) and a log-variance, as ``aevb_fast.models``' decoders do, runs its head inside
``af.linear_bernoulli_log_prob`` / ``af.linear_gaussian_log_prob`` (the Gaussian head's mean
through a sigmoid), so the logits are never stored whole; with the analytic estimator and a
``"mean"`` or ``"sum"`` reduction its gradients are made in the forward pass (as the unfused
likelihood's are: the analytic estimator sums it in its operator). ``fused_head=False`` (or the
reference backend) calls ``decoder(z)`` instead.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules import module as module_globals
from torch.nn.utils import parametrize

from . import ops, reference

ESTIMATORS = ("analytic", "generic", "iwae")
LIKELIHOODS = ("bernoulli", "gaussian")
REDUCTIONS = ("mean", "sum", "none")
# The fused operators, or their plain-PyTorch twins (same names and signatures): the switch
# that compares a training run with and without aevb_fast.
BACKENDS = {"fused": ops, "reference": reference}

Decoder = Callable[[Tensor], "Tensor | tuple[Tensor, Tensor]"]


def _check_options(likelihood, num_samples, estimator, beta, free_bits, reduction, backend="fused"):
    if backend not in BACKENDS:
        raise ValueError(f"elbo: backend must be one of {tuple(BACKENDS)}, got {backend!r}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"elbo: likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"elbo: estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"elbo: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"elbo: num_samples must be a positive int, got {num_samples!r}")
    # A tensor beta is a schedule read on the device (a captured training step): reading it here
    # would synchronise with the host, so its caller checks it.
    fixed_beta = not isinstance(beta, Tensor)
    if fixed_beta and beta < 0:
        raise ValueError(f"elbo: beta must be >= 0, got {beta}")
    if free_bits < 0:
        raise ValueError(f"elbo: free_bits must be >= 0, got {free_bits}")
    if estimator == "iwae" and (not fixed_beta or beta != 1.0):
        raise ValueError(
            "elbo: beta weights the KL of the analytic and generic estimators; "
            "the importance-weighted bound takes beta=1.0"
        )
    if free_bits > 0 and estimator != "analytic":
        raise ValueError("elbo: free_bits needs the per-dimension KL of estimator='analytic'")


def fused_head_of(
    decoder: Decoder, likelihood: str, backend: str = "fused", fused_head: bool = True, x: Tensor | None = None
) -> nn.Linear | None:
    """The decoder's output layer when the likelihood can run fused with it (see the module's
    docstring), else None. A decoder opts in with ``fusable_head``: having a head is not
    enough, since its forward may read the head's output otherwise. Data ``x`` that needs a
    gradient (an attack on the input, a saliency map) is not fused: the fused head gives x none."""
    head = getattr(decoder, "head", None)
    if (
        fused_head
        and backend == "fused"
        and not (x is not None and x.requires_grad and torch.is_grad_enabled())
        and _declared_fusable(decoder) == likelihood
        and isinstance(head, nn.Linear)
        and callable(getattr(decoder, "features", None))
        and not _runs_more_than_its_layers(decoder, head)
    ):
        return head
    return None


def _declared_fusable(decoder) -> str | None:
    """The decoder's own ``fusable_head``: set on it or on its class, not read through a wrapper
    that passes attributes on (activation checkpointing's, torch.compile's OptimizedModule), which
    runs more than the layers and so is called."""
    own = getattr(decoder, "__dict__", {})
    return own["fusable_head"] if "fusable_head" in own else getattr(type(decoder), "fusable_head", None)


def _runs_more_than_its_layers(decoder, head: nn.Linear) -> bool:
    """Whether calling the decoder or its head does more than the fused head, which reads
    ``head.weight`` and ``head.bias`` and calls neither module: a forward or backward hook on
    either (FSDP's all-gather, pruning's mask, the old API's spectral and weight norms, LazyLinear's
    first call, a user's hook) or a global one (FlopCounterMode's module tracker: it then counts
    the unfused layers), a parametrization of the head (torch.nn.utils.parametrize), a head whose
    forward is not nn.Linear's (quantization-aware training's fake-quantized Linear), or a decoder
    compiled in place (``decoder.compile()``) or with its forward replaced. Such a decoder is called instead: fusing it would
    leave the hook or wrapper out without a word."""
    modules = (decoder, head) if isinstance(decoder, nn.Module) else (head,)
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks for m in modules):
        return True
    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return True
    if module_globals._global_backward_hooks or module_globals._global_backward_pre_hooks:
        return True
    if getattr(decoder, "_compiled_call_impl", None) is not None:
        return True
    # A forward replaced on the object (a monkeypatch, torch.cuda.make_graphed_callables).
    if any("forward" in getattr(m, "__dict__", {}) for m in (decoder, head)):
        return True
    # A subclass: parametrize makes one (with nn.Linear's forward), QAT's Linear has its own forward.
    return type(head) is not nn.Linear and (
        parametrize.is_parametrized(head) or type(head).forward is not nn.Linear.forward
    )


def _head_log_likelihood(
    x: Tensor, z: Tensor, decoder: Decoder, head: nn.Linear, likelihood: str, reduction: str = "none"
) -> Tensor:
    """log p(x | z_l) through the fused head: shape (L, B), or its sum or mean."""
    samples, batch = z.shape[0], z.shape[1]
    data = math.prod(x.shape[1:])
    parts = 1 if likelihood == "bernoulli" else 2
    if not torch.jit.is_tracing() and head.out_features != parts * data:  # (comparing traced sizes warns)
        kind = (
            "a Bernoulli decoder must return a tensor of logits"
            if parts == 1
            else "a Gaussian decoder must return a (mean, logvar) pair"
        )
        raise ValueError(
            f"elbo: {kind}: its head has {head.out_features} outputs for data of {data} values, not {parts * data}"
        )
    h = decoder.features(z.reshape(samples * batch, z.shape[-1]))
    h = h.reshape(samples, batch, h.shape[-1])
    weight, bias = head.weight, head.bias
    if weight.dtype != h.dtype:  # autocast ran the hidden layers in a lower precision
        weight, bias = weight.to(h.dtype), None if bias is None else bias.to(h.dtype)
    fn = ops.linear_bernoulli_log_prob if likelihood == "bernoulli" else ops.linear_gaussian_log_prob
    # Under autocast x takes h's dtype too (the op wants one dtype), as the logits would have.
    return fn(x.reshape(batch, data).to(h.dtype), h, weight, bias, reduction=reduction)


def _log_likelihood(
    x: Tensor,
    z: Tensor,
    decoder: Decoder,
    likelihood: str,
    ops=ops,
    head: nn.Linear | None = None,
    reduction: str = "none",
) -> Tensor:
    """log p(x | z_l) for z of shape (L, B, J): shape (L, B), or its sum or mean."""
    if head is not None:
        return _head_log_likelihood(x, z, decoder, head, likelihood, reduction)
    samples, batch = z.shape[0], z.shape[1]
    out = decoder(z.reshape(samples * batch, z.shape[-1]))
    event_dims = x.dim() - 1
    shape = (samples, *x.shape)
    if likelihood == "bernoulli":
        if not isinstance(out, Tensor):
            raise ValueError("elbo: a Bernoulli decoder must return a tensor of logits")
        return ops.bernoulli_log_prob(x, out.reshape(shape), event_dims=event_dims, reduction=reduction)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValueError("elbo: a Gaussian decoder must return a (mean, logvar) pair")
    mean, logvar = out
    return ops.gaussian_log_prob(
        x, mean.reshape(shape), _log_variance_for(logvar, mean, shape), event_dims=event_dims, reduction=reduction
    )


def _log_variance_for(logvar: Tensor | float, mean: Tensor, shape: tuple[int, ...]) -> Tensor | float:
    """The decoder's log-variance, which broadcasts against its ``mean`` (L * B rows, in the
    decoder's layout), laid out against ``shape`` = (L, B, *x's event) for the op: a full tensor
    reshaped as the mean is; one with a row each (leading L * B, as (L B, 1, 1, 1)) split into
    (L, B); one shared by the rows (a number, a learned scalar, (C, 1, 1), a row of the mean's
    shape) as it is, or in x's event shape where the decoder's layout is not x's (flat)."""
    if not isinstance(logvar, Tensor) or logvar.dim() == 0:
        return logvar
    rows, event = shape[0] * shape[1], shape[2:]
    if logvar.numel() == math.prod(shape):
        return logvar.reshape(shape)
    same_layout = tuple(mean.shape[1:]) == tuple(event)
    if logvar.dim() == mean.dim() and logvar.shape[0] == rows and rows > 1:  # a row each
        if same_layout:
            return logvar.reshape(shape[0], shape[1], *logvar.shape[1:])
        if logvar.numel() == rows:
            return logvar.reshape(shape[0], shape[1], *(1,) * len(event))
    elif same_layout or logvar.numel() == 1:
        return logvar  # shared by the rows: the op broadcasts it
    elif logvar.numel() == math.prod(event):
        return logvar.reshape(event)
    raise ValueError(
        f"elbo: the decoder's logvar has shape {tuple(logvar.shape)}, which its mean of shape "
        f"{tuple(mean.shape)} does not lay out on the data's points of shape {tuple(event)}: return "
        "it in the mean's shape, or as a number"
    )


def _log_prior_minus_posterior(z: Tensor, mu: Tensor, logvar: Tensor, ops=ops) -> Tensor:
    """log p(z) - log q(z | x) for z of shape (L, B, J): shape (L, B)."""
    zeros = torch.zeros((), dtype=z.dtype, device=z.device).expand_as(z)
    log_prior = ops.gaussian_log_prob(z, zeros, zeros, event_dims=1)
    log_posterior = ops.gaussian_log_prob(z, mu.expand_as(z), logvar.expand_as(z), event_dims=1)
    return log_prior - log_posterior


def _free_bits_kl(mu: Tensor, logvar: Tensor, free_bits: float, ops=ops) -> Tensor:
    """Free bits (Kingma et al., 2016): each latent dimension's KL, averaged over the minibatch,
    counts as at least free_bits nats. The same value for every data point: shape (B,)."""
    per_dim = ops.gaussian_kl(mu, logvar, event_dims=0)  # (B, J)
    clamped = per_dim.mean(0).clamp(min=free_bits).sum()
    return clamped.expand(mu.shape[0])


def log_importance_weights(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    decoder: Decoder,
    *,
    likelihood: str = "bernoulli",
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    backend: str = "fused",
    fused_head: bool = True,
) -> Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) for K = num_samples draws: shape (K, B).
    Their logsumexp minus log K estimates log p(x) (see aevb_fast.evaluate)."""
    ops = BACKENDS[backend]
    z = ops.reparameterize(mu, logvar, num_samples=num_samples, generator=generator)
    head = fused_head_of(decoder, likelihood, backend, fused_head, x)
    return _log_likelihood(x, z, decoder, likelihood, ops, head) + _log_prior_minus_posterior(z, mu, logvar, ops)


def elbo(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    decoder: Decoder,
    *,
    likelihood: str = "bernoulli",
    num_samples: int = 1,
    estimator: str = "analytic",
    beta: float = 1.0,
    free_bits: float = 0.0,
    reduction: str = "mean",
    eps: Tensor | None = None,
    generator: torch.Generator | None = None,
    backend: str = "fused",
    fused_head: bool = True,
) -> Tensor:
    """The evidence lower bound per data point (nats), reduced over the batch by ``reduction``
    (``"mean"``, ``"sum"``, or ``"none"``: shape (B,)). To maximise: the loss is ``-elbo(...)``.

    ``x``: (B, ...), ``mu``/``logvar``: (B, J), from the encoder. ``decoder`` takes ``z`` of shape
    (L * B, J) and returns, for ``likelihood="bernoulli"``, logits (before any sigmoid) of ``x``'s
    shape per sample, or for ``likelihood="gaussian"`` a ``(mean, logvar)`` pair.
    ``estimator``: ``"analytic"`` (the KL in closed form, the paper's estimator B), ``"generic"``
    (``log p(z) - log q(z|x)`` at the samples, estimator A) or ``"iwae"`` (the importance-weighted
    bound over ``num_samples`` = K draws, Burda et al.). ``num_samples``: L draws of z per point.
    ``eps`` (L, B, J) fixes the noise (tests,
    reproducibility); otherwise it is drawn in the kernel from torch's generator.
    ``beta`` weights the KL term (KL warm-up); a tensor ``beta`` (a schedule kept on the device)
    is not checked, since reading it would synchronise with the host: keep it >= 0.
    ``free_bits`` (Kingma et al., 2016) counts each latent dimension's KL, averaged over the
    minibatch, as at least ``free_bits`` nats: a training objective, not a bound; with
    ``reduction="none"`` every data point carries that same minibatch KL.
    Latents of more dims (a conv VAE's (B, C, H, W)) go in flattened to (B, C*H*W), the decoder
    reshaping them back; free bits then count per element, not per channel.
    ``backend="reference"`` computes the same with plain PyTorch ops instead of the fused ones.
    ``fused_head=False`` keeps the decoder's output layer apart from the likelihood.
    """
    _check_options(likelihood, num_samples, estimator, beta, free_bits, reduction, backend)
    ops = BACKENDS[backend]
    # (Its shapes compared only where a JIT does not trace: there comparing them warns.)
    if mu.dim() != 2 or (not torch.jit.is_tracing() and (mu.shape != logvar.shape or x.shape[0] != mu.shape[0])):
        raise ValueError(
            f"elbo: expected mu and logvar of shape (B, J) and x of shape (B, ...), got "
            f"x {tuple(x.shape)}, mu {tuple(mu.shape)}, logvar {tuple(logvar.shape)}"
        )
    # (Not while a JIT traces: comparing its shapes there warns; the operator checks eps anyway.)
    if (
        isinstance(eps, Tensor)
        and not torch.jit.is_tracing()
        and isinstance(num_samples, int)
        and eps.shape != (num_samples, *mu.shape)
    ):
        raise ValueError(
            f"elbo: eps must have shape (num_samples, B, J) = {(num_samples, *mu.shape)}, got {tuple(eps.shape)}"
            + ("; for one sample, eps[None] or eps.unsqueeze(0)" if eps.shape == mu.shape else "")
        )
    head = fused_head_of(decoder, likelihood, backend, fused_head, x)
    if estimator == "analytic":
        z, kl = ops.sample_and_kl(mu, logvar, eps=eps, num_samples=num_samples, generator=generator)
        if free_bits > 0:
            kl = _free_bits_kl(mu, logvar, free_bits, ops)
        if reduction != "none":
            # The likelihood summed in its operator (or the fused head), whose gradients are then
            # made in its forward pass.
            log_px = _log_likelihood(x, z, decoder, likelihood, ops, head, reduction="sum")
            total = log_px / num_samples - beta * kl.sum()
            return total / x.shape[0] if reduction == "mean" else total
        bound = _log_likelihood(x, z, decoder, likelihood, ops, head).mean(0) - beta * kl
    else:
        z = ops.reparameterize(mu, logvar, eps=eps, num_samples=num_samples, generator=generator)
        log_px = _log_likelihood(x, z, decoder, likelihood, ops, head)
        prior_term = _log_prior_minus_posterior(z, mu, logvar, ops)
        if estimator == "generic":
            bound = (log_px + beta * prior_term).mean(0)
        else:
            bound = torch.logsumexp(log_px + prior_term, dim=0) - math.log(num_samples)
    if reduction == "mean":
        return bound.mean()
    if reduction == "sum":
        return bound.sum()
    return bound


class ELBOLoss(nn.Module):
    """``-elbo(...)`` as a loss module: ``loss = ELBOLoss()(x, mu, logvar, decoder)``.

    ``beta`` and ``free_bits`` are plain attributes, so a trainer can change them between steps
    (KL warm-up).
    """

    def __init__(
        self,
        *,
        likelihood: str = "bernoulli",
        num_samples: int = 1,
        estimator: str = "analytic",
        beta: float = 1.0,
        free_bits: float = 0.0,
        reduction: str = "mean",
        backend: str = "fused",
        fused_head: bool = True,
    ):
        super().__init__()
        _check_options(likelihood, num_samples, estimator, beta, free_bits, reduction, backend)
        self.likelihood, self.num_samples, self.estimator = likelihood, num_samples, estimator
        self.beta, self.free_bits, self.reduction, self.backend = beta, free_bits, reduction, backend
        self.fused_head = fused_head

    def forward(self, x: Tensor, mu: Tensor, logvar: Tensor, decoder: Decoder) -> Tensor:
        return -elbo(
            x,
            mu,
            logvar,
            decoder,
            likelihood=self.likelihood,
            num_samples=self.num_samples,
            estimator=self.estimator,
            beta=self.beta,
            free_bits=self.free_bits,
            reduction=self.reduction,
            backend=self.backend,
            fused_head=self.fused_head,
        )

    def extra_repr(self) -> str:
        return (
            f"likelihood={self.likelihood!r}, num_samples={self.num_samples}, "
            f"estimator={self.estimator!r}, beta={self.beta}, free_bits={self.free_bits}, "
            f"reduction={self.reduction!r}"
        )
