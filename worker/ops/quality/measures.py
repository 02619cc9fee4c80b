"""Measures: how good the model's answers are against known labels, and what the escalation rule does.

Pure arithmetic on (true label, negative probability) pairs, so every figure can be checked by
hand. The predicted label is negative when its probability is at least 0.5 (the classifier's
rule); the score is the predicted label's probability. An item is escalated when predicted
negative or when its score is under the threshold (the triage policy's rule).

Expected calibration error: the items are put in 10 equal-width bins of the score over [0.5, 1]
(a two-class score is never under 0.5); ECE is the item-weighted mean of |accuracy - mean score|
over the bins. The Brier score is the mean squared difference between the negative probability
and 1 for a truly negative item, 0 for a positive one.

Each item may carry a weight (audit-sample verdicts weighed more, `--audit-weight`): every count
is then a sum of weights. Without weights every item counts 1 and every count is a whole number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from worker.contracts.values import Sentiment

CLASSES: tuple[Sentiment, ...] = ("negative", "positive")
ECE_BINS = 10
SWEEP = tuple(round(0.50 + 0.05 * i, 2) for i in range(10))  # 0.50 ... 0.95


@dataclass(frozen=True)
class ClassFigures:
    precision: float
    recall: float
    f1: float
    support: float  # a count, or a sum of weights


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: float
    mean_score: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Escalation:
    """What the rule "negative, or a score under `threshold`" does on these items."""

    threshold: float
    escalated: float
    share_escalated: float  # of all items
    negatives_caught: float | None  # share of the truly negative items escalated
    escalation_precision: float | None  # share of the escalated items truly negative


@dataclass(frozen=True)
class Evaluation:
    n: float  # items, or the sum of their weights
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassFigures]
    confusion: dict[str, dict[str, float]]  # true label -> predicted label -> count
    ece: float
    brier: float
    reliability: list[ReliabilityBin]
    escalation: Escalation  # at the configured threshold
    sweep: list[Escalation]


def predicted(negative_prob: float) -> Sentiment:
    return "negative" if negative_prob >= 0.5 else "positive"


def score_of(negative_prob: float) -> float:
    return max(negative_prob, 1.0 - negative_prob)


def measure(
    truths: Sequence[Sentiment],
    negative_probs: Sequence[float],
    threshold: float,
    weights: Sequence[float] | None = None,
) -> Evaluation:
    if len(truths) != len(negative_probs) or not truths or (weights is not None and len(weights) != len(truths)):
        raise ValueError("need as many probabilities (and weights) as labels, and at least one")
    w = list(weights) if weights is not None else [1] * len(truths)
    predictions = [predicted(p) for p in negative_probs]
    confusion: dict[str, dict[str, float]] = {t: {p: 0 for p in CLASSES} for t in CLASSES}
    for truth, guess, weight in zip(truths, predictions, w, strict=True):
        confusion[truth][guess] += weight
    per_class: dict[str, ClassFigures] = {label: _class_figures(confusion, label) for label in CLASSES}
    n = sum(w)
    squared = (weight * (p - (t == "negative")) ** 2 for t, p, weight in zip(truths, negative_probs, w, strict=True))
    return Evaluation(
        n=n,
        accuracy=sum(confusion[c][c] for c in CLASSES) / n,
        macro_f1=sum(f.f1 for f in per_class.values()) / len(CLASSES),
        per_class=per_class,
        confusion=confusion,
        ece=expected_calibration_error(truths, negative_probs, w),
        brier=sum(squared) / n,
        reliability=reliability(truths, negative_probs, w),
        escalation=escalation_at(truths, negative_probs, threshold, w),
        sweep=[escalation_at(truths, negative_probs, t, w) for t in SWEEP],
    )


def escalation_at(
    truths: Sequence[Sentiment],
    negative_probs: Sequence[float],
    threshold: float,
    weights: Sequence[float] | None = None,
    thresholds: Sequence[float] | None = None,
) -> Escalation:
    """The rule at `threshold`; with `thresholds`, each item judged at its own (a threshold chosen on
    other items: see finetune's cross-judging), the figure still labelled `threshold`."""
    w = list(weights) if weights is not None else [1] * len(truths)
    each = list(thresholds) if thresholds is not None else [threshold] * len(truths)
    escalated = caught = 0
    for truth, p, weight, at in zip(truths, negative_probs, w, each, strict=True):
        if predicted(p) == "negative" or score_of(p) < at:
            escalated += weight  # type: ignore[assignment]
            caught += weight * (truth == "negative")  # type: ignore[assignment]
    negatives = sum(weight for t, weight in zip(truths, w, strict=True) if t == "negative")
    return Escalation(
        threshold=threshold,
        escalated=escalated,
        share_escalated=escalated / sum(w),
        negatives_caught=caught / negatives if negatives else None,
        escalation_precision=caught / escalated if escalated else None,
    )


def reliability(
    truths: Sequence[Sentiment], negative_probs: Sequence[float], weights: Sequence[float] | None = None
) -> list[ReliabilityBin]:
    width = 0.5 / ECE_BINS
    w = list(weights) if weights is not None else [1] * len(truths)
    members: list[list[tuple[float, bool, float]]] = [[] for _ in range(ECE_BINS)]
    for truth, p, weight in zip(truths, negative_probs, w, strict=True):
        score = score_of(p)
        index = math.floor((score - 0.5) / width + 1e-9)  # bins are [lower, upper); 0.95 - 0.5 is 0.4499...
        members[min(index, ECE_BINS - 1)].append((score, predicted(p) == truth, weight))
    bins = []
    for i, items in enumerate(members):
        total = sum(weight for _, _, weight in items)
        bins.append(
            ReliabilityBin(
                lower=0.5 + i * width,
                upper=0.5 + (i + 1) * width,
                count=total,
                mean_score=sum(s * weight for s, _, weight in items) / total if items else None,
                accuracy=sum(ok * weight for _, ok, weight in items) / total if items else None,
            )
        )
    return bins


def expected_calibration_error(
    truths: Sequence[Sentiment], negative_probs: Sequence[float], weights: Sequence[float] | None = None
) -> float:
    bins = reliability(truths, negative_probs, weights)
    total = sum(b.count for b in bins)
    return sum(b.count * abs(b.accuracy - b.mean_score) for b in bins if b.count) / total  # type: ignore[operator]


def _class_figures(confusion: Mapping[str, Mapping[str, float]], label: str) -> ClassFigures:
    true_positive = confusion[label][label]
    predicted_as = sum(confusion[t][label] for t in CLASSES)
    support = sum(confusion[label].values())
    precision = true_positive / predicted_as if predicted_as else 0.0
    recall = true_positive / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassFigures(precision, recall, f1, support)
