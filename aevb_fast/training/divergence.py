"""The divergence rules, judged as a user means them: a run has diverged when its bound is not
finite, or, past a fresh model's transient (its first TRANSIENT_STEPS steps, whose bound can swing
far below the start and recover), falls catastrophically below its best so far or stays far below
it for DIVERGENCE_PATIENCE checks in a row. A run that ends below its
starting test bound did not learn; a run that ends within the transient is too short to judge
either way (a notice, not an error). Neither verdict is ever reported as a result."""

from __future__ import annotations

import math

from .options import short_count

# The first optimizer steps of a freshly initialised network: its bound can fall far below the
# start and recover (MNIST's MLP at Adagrad 0.02 dips from -543 to -6078 at step 5 and is back at
# -386 by step 10; a convolutional VAE's first steps dip to -10^4). Within them only a bound that is
# not finite is judged: how deep a dip looks depends on how often the run is evaluated (a single
# step's bound, or the mean of SYNC_EVERY), and the verdict must not. A run that ends within them
# is not judged.
TRANSIENT_STEPS = 50
# Consecutive checks (of SYNC_EVERY steps each, or evaluations) past the transient below the
# divergence threshold that make a divergence.
DIVERGENCE_PATIENCE = 5
# A bound this many times further below the best so far than the divergence threshold, past the
# transient, is a divergence at once: a run that recovers from it is luck of the seed, not a recipe.
CATASTROPHE_FACTOR = 100.0
# A first result: steps a run needs for its bound to be worth reading (twice the transient).
FIRST_RESULT_STEPS = 2 * TRANSIENT_STEPS


class TrainingDiverged(RuntimeError):
    pass


class TrainingDidNotLearn(TrainingDiverged):
    """The run ended with a test bound below the untrained model's (see ``did_not_learn``)."""


class TooShortToJudge(UserWarning):
    """Warned (not raised) when a run ends within the transient: its bound is reported, but it is
    called neither learned nor diverged (see ``too_short_notice``)."""


def did_not_learn(start: float, final: float) -> bool:
    """Whether a final bound is below the starting one by more than the noise of the one-sample
    estimate (0.1% of |start|, at least 0.1 nats): a run of a few steps that moved nothing is
    not called worse for a difference in the last digits."""
    return final < start - max(0.1, 1e-3 * abs(start))


def too_short(steps: int) -> bool:
    """Whether a run of this many optimizer steps ended within the transient."""
    return steps <= TRANSIENT_STEPS


def first_result_samples(batch_size: int) -> int:
    """Roughly the samples a first result needs: FIRST_RESULT_STEPS minibatches."""
    return FIRST_RESULT_STEPS * batch_size


def too_short_notice(samples_seen: int, steps: int, batch_size: int) -> str:
    need = first_result_samples(batch_size)
    return (
        f"{samples_seen} samples ({steps} steps of {batch_size}) is too short to judge this run: a fresh "
        f"model's bound swings for its first {TRANSIENT_STEPS} steps; a first result needs about "
        f"{FIRST_RESULT_STEPS} steps, {short_count(need)} samples or more"
    )


def _margin(reference: float) -> float:
    return max(abs(reference), 100.0)


def divergence_threshold(reference: float) -> float:
    """The bound below which a run counts as diverging: as far again below its best bound so far
    as that is from zero (at least 100 nats). For MNIST's untrained model (-543) that is -1086;
    for a model at -100, -200."""
    return reference - _margin(reference)


def catastrophe_threshold(reference: float) -> float:
    """The bound below which a run has diverged at once: CATASTROPHE_FACTOR margins below the best
    so far (-54,843 for MNIST's untrained model; a convolutional VAE's first steps dip to -10^4)."""
    return reference - CATASTROPHE_FACTOR * _margin(reference)


def collapsed_test_bound(value: float, best: float | None, step: int = TRANSIENT_STEPS + 1) -> str | None:
    """Why an evaluation's test bound after optimizer step ``step`` is no result, whatever the
    training bound does, or None: not finite, or, past the transient, CATASTROPHE_FACTOR margins
    below the best test bound so far (None: the first evaluation). A model can fit its training points ever better while the likelihood of new
    points collapses: a Gaussian whose variance shrinks around values the training data repeats
    (grey-level MNIST's 0s) does."""
    if not math.isfinite(value):
        return "not finite"
    if best is not None and not too_short(step) and value < catastrophe_threshold(best):
        return (
            f"below {catastrophe_threshold(best):.1f} ({CATASTROPHE_FACTOR:g} times further below the best "
            f"test bound so far, {best:.1f}, than the divergence threshold)"
        )
    return None


class DivergenceGuard:
    """Follows the bound check by check. ``start`` is the untrained model's bound (None until the
    first evaluation), ``best`` the highest finite bound checked since; the reference of both
    thresholds is the higher of the two. ``low_checks`` counts the consecutive checks below the
    threshold, ``judged_low`` those of them past the transient."""

    def __init__(self, start: float | None = None, best: float | None = None):
        self.start, self.best = start, best
        self.low_checks = self.judged_low = 0

    @property
    def reference(self) -> float | None:
        known = [v for v in (self.start, self.best) if v is not None]
        return max(known) if known else None

    def check(self, value: float, step: int = TRANSIENT_STEPS + 1, sets_best: bool = True) -> tuple[bool, str | None]:
        """(healthy, why the run diverged or None) for a bound checked after optimizer step
        ``step``; within the transient only a bound that is not finite is a divergence. Healthy:
        finite and above the threshold. ``sets_best``: whether the value may raise the best bound
        so far (an evaluation's ELBO; not a minibatch's training objective, which KL warm-up and
        free bits lift above the bound)."""
        reference = self.reference
        threshold = divergence_threshold(reference) if reference is not None else -math.inf
        if math.isfinite(value) and value >= threshold:
            self.low_checks = self.judged_low = 0
            if sets_best:
                self.best = value if self.best is None else max(self.best, value)
            return True, None
        self.low_checks += 1
        if not math.isfinite(value):
            return False, "not finite"
        if too_short(step):
            return False, None  # the transient: not judged
        if value < catastrophe_threshold(reference):
            return False, (
                f"below {catastrophe_threshold(reference):.1f} ({CATASTROPHE_FACTOR:g} times further "
                f"below the best bound so far, {reference:.1f}, than the divergence threshold)"
            )
        self.judged_low += 1
        if self.judged_low < DIVERGENCE_PATIENCE:
            return False, None
        return False, (
            f"below {threshold:.1f}, the divergence threshold (the best bound so far, {reference:.1f}, "
            f"minus max(|best|, 100)), past the first {TRANSIENT_STEPS} steps, for {self.judged_low} "
            "checks in a row"
        )
