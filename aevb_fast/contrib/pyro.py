"""The classes of ``aevb_fast.distributions`` made usable in ``pyro.sample`` (Pyro needs its
``TorchDistributionMixin`` on a site's distribution)::

    from aevb_fast.contrib.pyro import BernoulliLogits, DiagonalNormal, StandardNormal

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", StandardNormal(J, device=x.device))   # the plate expands it
            pyro.sample("x", BernoulliLogits(decoder(z)), obs=x)       # logits, not a sigmoid's output

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            mu, logvar = encoder(x)
            pyro.sample("z", DiagonalNormal(mu, logvar))

``TraceMeanField_ELBO`` finds the fused KL through torch's ``register_kl``, which these classes
inherit; ``Trace_ELBO`` uses the fused ``rsample`` and ``log_prob``.
"""

from __future__ import annotations

try:
    from pyro.distributions.torch_distribution import TorchDistributionMixin
except ImportError as error:  # pragma: no cover - only without Pyro
    raise ImportError("aevb_fast.contrib.pyro needs Pyro: pip install 'pyro-ppl>=1.9'") from error

from .. import distributions


class DiagonalNormal(distributions.DiagonalNormal, TorchDistributionMixin):
    __doc__ = distributions.DiagonalNormal.__doc__


class StandardNormal(distributions.StandardNormal, TorchDistributionMixin):
    __doc__ = distributions.StandardNormal.__doc__


class BernoulliLogits(distributions.BernoulliLogits, TorchDistributionMixin):
    __doc__ = distributions.BernoulliLogits.__doc__


__all__ = ["DiagonalNormal", "StandardNormal", "BernoulliLogits"]
