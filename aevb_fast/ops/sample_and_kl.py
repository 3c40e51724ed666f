"""The sample_and_kl family: reparameterize, gaussian_kl and sample_and_kl (one kernel family,
``csrc/*/sample_and_kl.*``): their wrappers, fakes and autocast rule."""

from __future__ import annotations

import torch
from torch import Tensor

from ._arguments import (
    accumulate_dtype,
    check_same_device,
    draw_seed,
    latent_arguments,
    noise_arguments,
    promoted,
    required_event_dims,
)
from .family import OpFamily


class SampleAndKLOps:
    """The family's public functions, over the library ``self._ops``."""

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
        mu, logvar = promoted("reparameterize", ("mu", "logvar"), (mu, logvar))
        samples, eps = noise_arguments("reparameterize", mu, eps, num_samples, generator)
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
        mu, logvar, prior_mu, prior_logvar = latent_arguments("gaussian_kl", mu, logvar, prior_mu, prior_logvar)
        event_dims = required_event_dims("gaussian_kl", "mu", mu, event_dims)
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
        mu, logvar, prior_mu, prior_logvar = latent_arguments("sample_and_kl", mu, logvar, prior_mu, prior_logvar)
        event_dims = required_event_dims("sample_and_kl", "mu", mu, event_dims)
        samples, eps = noise_arguments("sample_and_kl", mu, eps, num_samples, generator)
        if eps is not None and isinstance(mu, Tensor) and eps.dtype != mu.dtype:
            mu, logvar = mu.to(eps.dtype), logvar.to(eps.dtype)
            if prior_mu is not None:
                prior_mu, prior_logvar = prior_mu.to(eps.dtype), prior_logvar.to(eps.dtype)
        seed = None if eps is not None else draw_seed(mu.device, generator)
        z, kl = self._ops.sample_and_kl(mu, logvar, eps, seed, samples, prior_mu, prior_logvar, event_dims)
        return (z if num_samples is not None else z.squeeze(0)), kl


def _reparameterize_fake(mu, logvar, eps, seed, num_samples):
    check_same_device(mu=mu, logvar=logvar, eps=eps, seed=seed)
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
    check_same_device(mu=mu, logvar=logvar, prior_mu=prior_mu, prior_logvar=prior_logvar)
    return mu.new_empty(_kl_shape(mu, event_dims), dtype=accumulate_dtype(mu.dtype))


def _gaussian_kl_backward_fake(grad_kl, mu, logvar, prior_mu=None, prior_logvar=None, event_dims=1):
    return _latent_grads(mu, prior_mu)


def _sample_and_kl_fake(mu, logvar, eps, seed, num_samples, prior_mu=None, prior_logvar=None, event_dims=1):
    check_same_device(mu=mu, logvar=logvar, eps=eps, seed=seed, prior_mu=prior_mu, prior_logvar=prior_logvar)
    kl = mu.new_empty(_kl_shape(mu, event_dims), dtype=accumulate_dtype(mu.dtype))
    return mu.new_empty((num_samples, *mu.shape)), kl


def _sample_and_kl_backward_fake(
    grad_z, grad_kl, mu, logvar, eps, seed, prior_mu=None, prior_logvar=None, event_dims=1
):
    return _latent_grads(mu, prior_mu)


FAMILY = OpFamily(
    name="sample_and_kl",
    functions=SampleAndKLOps,
    ops=("reparameterize", "gaussian_kl", "sample_and_kl"),
    fakes={
        "reparameterize": _reparameterize_fake,
        "reparameterize_backward": _reparameterize_backward_fake,
        "gaussian_kl": _gaussian_kl_fake,
        "gaussian_kl_backward": _gaussian_kl_backward_fake,
        "sample_and_kl": _sample_and_kl_fake,
        "sample_and_kl_backward": _sample_and_kl_backward_fake,
    },
    autocast_float32=("gaussian_kl",),
)
