"""The wake-sleep algorithm (Hinton, Dayan, Frey & Neal, 1995), the baseline of the paper's
Figure 2, for the same encoder (recognition model) and decoder (generative model) as AEVB:

- wake: z ~ q(z | x) for a data minibatch; the decoder follows the gradient of log p(x | z)
  (the prior N(0, I) has no parameters); no gradient reaches the encoder;
- sleep: a "dream" z ~ p(z), x ~ p(x | z) from the decoder; the encoder follows the gradient of
  log q(z | x) on it; no gradient reaches the decoder.

Both phases make one surrogate loss, so one backward pass and one optimizer step (the trainer's:
Adagrad, weight decay) update both networks, as for AEVB. The bound logged for a wake-sleep run
is the same ELBO estimator as AEVB's, evaluated with the recognition model: the wake phase's
sample gives it for the minibatch at no extra cost.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..elbo import BACKENDS
from ..models import VAE


class WakeSleep(nn.Module):
    """``forward(x)`` returns ``(loss, bound)``: the surrogate loss whose gradient is the wake
    (decoder) and sleep (encoder) updates, and the minibatch's mean ELBO (no gradient)."""

    def __init__(self, model: VAE):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, backend: str = "fused") -> tuple[Tensor, Tensor]:
        log_px, bound = self.wake(x, backend)
        log_q = self.sleep(x.shape[0], backend)
        return -(log_px.mean() + log_q.mean()), bound

    def wake(self, x: Tensor, backend: str = "fused") -> tuple[Tensor, Tensor]:
        """log p(x | z) with z ~ q(z | x) (its gradient reaches the decoder only), and the
        minibatch's mean ELBO, log p(x | z) - KL(q || p), without gradient."""
        ops = BACKENDS[backend]
        x = x.flatten(1)
        mu, logvar = self.model.encoder(x)
        z, kl = ops.sample_and_kl(mu.detach(), logvar.detach())
        log_px = self._log_likelihood(ops, self.model.decoder.likelihood, x, self.model.decoder(z))
        return log_px, (log_px - kl).mean().detach()

    def sleep(self, batch: int, backend: str = "fused") -> Tensor:
        """log q(z | x) of dreams z ~ p(z), x ~ p(x | z) (its gradient reaches the encoder only)."""
        ops = BACKENDS[backend]
        with torch.no_grad():
            z_dream = torch.randn(batch, self.model.encoder.latent, device=self._device())
            x_dream = self._sample_data(self.model.decoder.likelihood, self.model.decoder(z_dream))
        mu, logvar = self.model.encoder(x_dream)
        return ops.gaussian_log_prob(z_dream, mu, logvar)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @staticmethod
    def _log_likelihood(ops, likelihood: str, x: Tensor, out) -> Tensor:
        if likelihood == "bernoulli":
            return ops.bernoulli_log_prob(x, out)
        mean, logvar = out
        return ops.gaussian_log_prob(x, mean, logvar)

    @staticmethod
    def _sample_data(likelihood: str, out) -> Tensor:
        if likelihood == "bernoulli":
            return torch.bernoulli(torch.sigmoid(out))
        mean, logvar = out
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
