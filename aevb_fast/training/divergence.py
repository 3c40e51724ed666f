"""The divergence rules: a run whose bound is not finite, falls catastrophically, or stays far
below where it started, has diverged and is stopped; a run that ends below its starting bound
did not learn. Neither is ever reported as a result."""

from __future__ import annotations

import math

# Consecutive checks (of SYNC_EVERY steps each, or evaluations) below the divergence threshold
# that make a divergence: the first Adagrad steps of a freshly initialised network can dip far
# below the start for a few steps and recover.
DIVERGENCE_PATIENCE = 5
# A bound this many times further below the start than the divergence threshold is a divergence
# at once, whatever follows: a run that recovers from it is luck of the seed, not a recipe.
CATASTROPHE_FACTOR = 100.0


class TrainingDiverged(RuntimeError):
    pass


class TrainingDidNotLearn(TrainingDiverged):
    """The run ended with a test bound below the untrained model's (see ``did_not_learn``)."""


def did_not_learn(start: float, final: float) -> bool:
    """Whether a final bound is below the starting one by more than the noise of the one-sample
    estimate (0.1% of |start|, at least 0.1 nats): a run of a few steps that moved nothing is
    not called worse for a difference in the last digits."""
    return final < start - max(0.1, 1e-3 * abs(start))


def _margin(start: float) -> float:
    return max(abs(start), 100.0)


def divergence_threshold(start: float) -> float:
    """The bound below which a run counts as diverging: as far again below its starting bound as
    the starting bound is from zero (at least 100 nats). For MNIST's untrained model (-543) that
    is -1086; a healthy run rises from its start."""
    return start - _margin(start)


def catastrophe_threshold(start: float) -> float:
    """The bound below which a run has diverged at once: CATASTROPHE_FACTOR margins below the
    start (-54,843 for MNIST's untrained model; a convolutional VAE's first steps dip to -10^4)."""
    return start - CATASTROPHE_FACTOR * _margin(start)


class DivergenceGuard:
    """Follows the bound check by check; ``start`` is the untrained model's bound (None until
    the first evaluation)."""

    def __init__(self, start: float | None = None):
        self.start, self.low_checks = start, 0

    def check(self, value: float) -> tuple[bool, str | None]:
        """(healthy, why the run diverged or None). Healthy: finite and above the threshold."""
        threshold = divergence_threshold(self.start) if self.start is not None else -math.inf
        if math.isfinite(value) and value >= threshold:
            self.low_checks = 0
            return True, None
        self.low_checks += 1
        if not math.isfinite(value):
            return False, "not finite"
        if value < catastrophe_threshold(self.start):
            return False, (f"below {catastrophe_threshold(self.start):.1f} ({CATASTROPHE_FACTOR:g} times further "
                           f"below the starting bound {self.start:.1f} than the divergence threshold)")
        if self.low_checks < DIVERGENCE_PATIENCE:
            return False, None
        return False, (f"below {threshold:.1f}, the divergence threshold (the starting bound {self.start:.1f} "
                       f"minus max(|start|, 100)), for {self.low_checks} checks in a row")
