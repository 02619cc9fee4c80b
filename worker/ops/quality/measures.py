"""Measures: how good the model's answers are against known labels, and what the escalation rule does.

Pure arithmetic on (true label, negative probability) pairs, so every figure can be checked by
hand. The predicted label is negative when its probability is at least 0.5 (the classifier's
rule); the score is the predicted label's probability. An item is escalated when predicted
negative or when its score is under the threshold (the triage policy's rule).

Expected calibration error: the items are put in 10 equal-width bins of the score over [0.5, 1]
(a two-class score is never under 0.5); ECE is the item-weighted mean of |accuracy - mean score|
over the bins. The Brier score is the mean squared difference between the negative probability
and 1 for a truly negative item, 0 for a positive one.
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
    support: int


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_score: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Escalation:
    """What the rule "negative, or a score under `threshold`" does on these items."""

    threshold: float
    escalated: int
    share_escalated: float  # of all items
    negatives_caught: float | None  # share of the truly negative items escalated
    escalation_precision: float | None  # share of the escalated items truly negative


@dataclass(frozen=True)
class Evaluation:
    n: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassFigures]
    confusion: dict[str, dict[str, int]]  # true label -> predicted label -> count
    ece: float
    brier: float
    reliability: list[ReliabilityBin]
    escalation: Escalation  # at the configured threshold
    sweep: list[Escalation]


def predicted(negative_prob: float) -> Sentiment:
    return "negative" if negative_prob >= 0.5 else "positive"


def score_of(negative_prob: float) -> float:
    return max(negative_prob, 1.0 - negative_prob)


def measure(truths: Sequence[Sentiment], negative_probs: Sequence[float], threshold: float) -> Evaluation:
    if len(truths) != len(negative_probs) or not truths:
        raise ValueError("need as many probabilities as labels, and at least one")
    predictions = [predicted(p) for p in negative_probs]
    confusion: dict[str, dict[str, int]] = {t: {p: 0 for p in CLASSES} for t in CLASSES}
    for truth, guess in zip(truths, predictions, strict=True):
        confusion[truth][guess] += 1
    per_class: dict[str, ClassFigures] = {label: _class_figures(confusion, label) for label in CLASSES}
    n = len(truths)
    return Evaluation(
        n=n,
        accuracy=sum(confusion[c][c] for c in CLASSES) / n,
        macro_f1=sum(f.f1 for f in per_class.values()) / len(CLASSES),
        per_class=per_class,
        confusion=confusion,
        ece=expected_calibration_error(truths, negative_probs),
        brier=sum((p - (t == "negative")) ** 2 for t, p in zip(truths, negative_probs, strict=True)) / n,
        reliability=reliability(truths, negative_probs),
        escalation=escalation_at(truths, negative_probs, threshold),
        sweep=[escalation_at(truths, negative_probs, t) for t in SWEEP],
    )


def escalation_at(truths: Sequence[Sentiment], negative_probs: Sequence[float], threshold: float) -> Escalation:
    escalated = caught = 0
    for truth, p in zip(truths, negative_probs, strict=True):
        if predicted(p) == "negative" or score_of(p) < threshold:
            escalated += 1
            caught += truth == "negative"
    negatives = sum(t == "negative" for t in truths)
    return Escalation(
        threshold=threshold,
        escalated=escalated,
        share_escalated=escalated / len(truths),
        negatives_caught=caught / negatives if negatives else None,
        escalation_precision=caught / escalated if escalated else None,
    )


def reliability(truths: Sequence[Sentiment], negative_probs: Sequence[float]) -> list[ReliabilityBin]:
    width = 0.5 / ECE_BINS
    members: list[list[tuple[float, bool]]] = [[] for _ in range(ECE_BINS)]
    for truth, p in zip(truths, negative_probs, strict=True):
        score = score_of(p)
        index = math.floor((score - 0.5) / width + 1e-9)  # bins are [lower, upper); 0.95 - 0.5 is 0.4499...
        members[min(index, ECE_BINS - 1)].append((score, predicted(p) == truth))
    return [
        ReliabilityBin(
            lower=0.5 + i * width,
            upper=0.5 + (i + 1) * width,
            count=len(items),
            mean_score=sum(s for s, _ in items) / len(items) if items else None,
            accuracy=sum(ok for _, ok in items) / len(items) if items else None,
        )
        for i, items in enumerate(members)
    ]


def expected_calibration_error(truths: Sequence[Sentiment], negative_probs: Sequence[float]) -> float:
    bins = reliability(truths, negative_probs)
    return sum(b.count * abs(b.accuracy - b.mean_score) for b in bins if b.count) / len(truths)  # type: ignore[operator]


def _class_figures(confusion: Mapping[str, Mapping[str, int]], label: str) -> ClassFigures:
    true_positive = confusion[label][label]
    predicted_as = sum(confusion[t][label] for t in CLASSES)
    support = sum(confusion[label].values())
    precision = true_positive / predicted_as if predicted_as else 0.0
    recall = true_positive / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassFigures(precision, recall, f1, support)
