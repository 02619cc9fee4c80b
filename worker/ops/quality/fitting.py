"""Fitting: the temperature that makes the scores honest, and a threshold chosen for a target.

Temperature scaling (Guo et al. 2017) for two classes: the negative probability is
sigmoid(margin / T), and T minimises the negative log-likelihood of the true labels. The loss is
convex in 1/T, so a golden-section search over log T finds the minimum; a minimum at the edge of
the search means the margins do not follow the labels, and that is an error, not a fit.

The threshold for a target is the highest one on a 0.01 grid from 0.50 to 0.99 that meets it: the
most escalations (so the most negatives caught) the target allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from worker.contracts.errors import OperatorError
from worker.contracts.values import Sentiment
from worker.ops.quality.measures import Escalation, escalation_at

LOWEST_T, HIGHEST_T = 0.01, 100.0
THRESHOLD_GRID = tuple(round(0.50 + 0.01 * i, 2) for i in range(50))  # 0.50 ... 0.99


class FitError(OperatorError):
    """The data cannot give a calibration (e.g. the scores run against the labels)."""


def negative_log_likelihood(margins: Sequence[float], truths: Sequence[Sentiment], temperature: float) -> float:
    """Mean NLL of the true labels under p(negative) = sigmoid(margin / temperature)."""
    total = 0.0
    for margin, truth in zip(margins, truths, strict=True):
        x = margin / temperature if truth == "negative" else -margin / temperature
        total += max(-x, 0.0) + math.log1p(math.exp(-abs(x)))  # -log sigmoid(x), stable
    return total / len(margins)


def fit_temperature(margins: Sequence[float], truths: Sequence[Sentiment], iterations: int = 100) -> float:
    if len(set(truths)) < 2:
        raise FitError("calibration needs both negative and positive examples")
    low, high = math.log(LOWEST_T), math.log(HIGHEST_T)
    ratio = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return negative_log_likelihood(margins, truths, math.exp(log_t))

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(iterations):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    temperature = math.exp((low + high) / 2)
    if temperature > HIGHEST_T * 0.99:
        raise FitError(
            f"the best temperature is above {HIGHEST_T:g}: the model's scores barely follow these labels "
            "(check the label column, or the label mapping)"
        )
    return temperature


def choose_threshold(
    truths: Sequence[Sentiment],
    negative_probs: Sequence[float],
    *,
    min_precision: float | None = None,
    max_share: float | None = None,
) -> tuple[Escalation, str]:
    """The highest threshold meeting the target, with the rule in words; a FitError if none does."""
    if (min_precision is None) == (max_share is None):
        raise ValueError("give exactly one target")
    options = [escalation_at(truths, negative_probs, t) for t in THRESHOLD_GRID]
    if min_precision is not None:
        rule = f"escalation precision >= {min_precision:g}"
        meeting = [o for o in options if (o.escalation_precision or 0.0) >= min_precision]
        best = max(options, key=lambda o: o.escalation_precision or 0.0)
        miss = f"the best is {best.escalation_precision or 0:.3f} at threshold {best.threshold:.2f}"
    else:
        assert max_share is not None
        rule = f"share escalated <= {max_share:g}"
        meeting = [o for o in options if o.share_escalated <= max_share]
        miss = f"even {THRESHOLD_GRID[0]:.2f} escalates {options[0].share_escalated:.3f} (every negative is escalated)"
    if not meeting:
        raise FitError(f"no threshold gives {rule} on the held-out part: {miss}")
    return max(meeting, key=lambda o: o.threshold), rule
