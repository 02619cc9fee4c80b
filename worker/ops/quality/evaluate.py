"""Evaluate: run the worker's own classifier over a labelled file and report how it does (`triage-worker evaluate`).

The texts go through the same `SentimentClassifier` the worker runs (truncation, batching, labels,
calibration), built by the same wiring, and the escalation figures use the same threshold the
worker would. What is evaluated is what runs. A text the model cannot take is counted and left out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from worker.contracts.values import ClassificationFailure, Prediction, Sentiment
from worker.ops.progress import progress
from worker.ops.quality.category_measures import Tagged
from worker.ops.quality.labelled import Example
from worker.ops.quality.measures import ECE_BINS, Escalation, Evaluation


class Predicts(Protocol):
    max_batch_size: int

    def predict(self, texts: Sequence[str]) -> list[Prediction | ClassificationFailure]: ...


@dataclass(frozen=True)
class Scored:
    """The model's answers on a labelled file, in file order (failures left out)."""

    truths: list[Sentiment]
    predictions: list[Prediction]
    failed: int
    seconds: float
    weights: list[float] | None = None  # per example, when some weigh more than 1 (audit-sample verdicts)
    tags: list[str | None] | None = None  # per example, the category tag (None: untagged)

    def tagged(self) -> list[Tagged]:
        """The tagged examples with the category head's logits (for the category figures)."""
        return [
            Tagged(tag, truth == "negative", p.category_logits)
            for tag, truth, p in zip(self.tags or [], self.truths, self.predictions, strict=True)
            if tag is not None and p.category_logits is not None
        ]

    @property
    def negative_probs(self) -> list[float]:
        return [p.negative_prob for p in self.predictions]

    @property
    def margins(self) -> list[float]:
        return [p.margin for p in self.predictions]

    @property
    def texts_per_s(self) -> float:
        return (len(self.predictions) + self.failed) / self.seconds if self.seconds else 0.0


def score(classifier: Predicts, examples: Sequence[Example], *, show_progress: bool = True) -> Scored:
    """Classify every example in chunks of several micro-batches (so lengths sort well), with a progress bar."""
    chunk = max(256, 4 * classifier.max_batch_size)
    starts = range(0, len(examples), chunk)
    truths: list[Sentiment] = []
    predictions: list[Prediction] = []
    weights: list[float] = []
    tags: list[str | None] = []
    failed = 0
    started = time.perf_counter()
    desc = f"classifying ({chunk} texts a chunk)"
    for start in progress(
        starts, total=len(starts), unit="chunk", desc=desc, enabled=show_progress and len(starts) > 1
    ):
        part = examples[start : start + chunk]
        for example, answer in zip(part, classifier.predict([e.text for e in part]), strict=True):
            if isinstance(answer, ClassificationFailure):
                failed += 1
            else:
                truths.append(example.label)
                predictions.append(answer)
                weights.append(example.weight)
                tags.append(example.category)
    weighted = weights if any(w != 1.0 for w in weights) else None
    return Scored(truths, predictions, failed, time.perf_counter() - started, weighted, tags)


def as_json(evaluation: Evaluation, about: dict[str, Any]) -> str:
    return json.dumps({**about, **asdict(evaluation), "ece_binning": _binning()}, indent=2) + "\n"


def render(evaluation: Evaluation, about: dict[str, Any]) -> str:
    e = evaluation
    lines = [
        f"{e.n:,} texts from {about['data']}, model {about['model']} "
        f"(calibration {about['calibration']}, truncation {about['truncation']})",
        f"throughput: {about['texts_per_s']:,.1f} texts/s on {about['device']}"
        + (f"; {about['failed']} texts failed and are left out" if about["failed"] else ""),
        "",
        f"accuracy {e.accuracy:.4f}   macro-F1 {e.macro_f1:.4f}   ECE {e.ece:.4f} ({_binning()})   Brier {e.brier:.4f}",
        "",
        f"{'':10}{'precision':>11}{'recall':>9}{'f1':>9}{'support':>9}",
    ]
    for label, figures in e.per_class.items():
        lines.append(
            f"{label:10}{figures.precision:>11.4f}{figures.recall:>9.4f}{figures.f1:>9.4f}{figures.support:>9,}"
        )
    lines += ["", "confusion matrix (rows: true label, columns: predicted)", f"{'':10}{'negative':>10}{'positive':>10}"]
    for truth, counts in e.confusion.items():
        lines.append(f"{truth:10}{counts['negative']:>10,}{counts['positive']:>10,}")
    lines += ["", f"escalation at the configured threshold: {_escalation_line(e.escalation)}", ""]
    lines.append("threshold sweep (an item is escalated when predicted negative or scored under the threshold)")
    lines.append(f"{'threshold':>9}{'escalated':>12}{'share':>8}{'negatives caught':>18}{'truly negative':>16}")
    for row in e.sweep:
        lines.append(
            f"{row.threshold:>9.2f}{row.escalated:>12,}{row.share_escalated:>8.1%}"
            f"{percent(row.negatives_caught):>18}{percent(row.escalation_precision):>16}"
        )
    return "\n".join(lines)


def side_by_side(columns: dict[str, tuple[Evaluation, float]], width: int = 12) -> list[str]:
    """The headline figures of several evaluations of the same texts (name -> evaluation, texts/s), a
    column each: accuracy, macro-F1, negatives predicted negative, negatives caught at the threshold
    (predicted negative or unsure), escalations truly negative, share escalated, ECE, speed."""

    def row(name: str, value: Callable[[Evaluation, float], str]) -> str:
        return f"{name:24}" + "".join(f"{value(e, rate):>{width}}" for e, rate in columns.values())

    return [
        f"{'':24}" + "".join(f"{name:>{width}}" for name in columns),
        row("accuracy", lambda e, _: f"{e.accuracy:.4f}"),
        row("macro-F1", lambda e, _: f"{e.macro_f1:.4f}"),
        row("negatives predicted", lambda e, _: percent(e.per_class["negative"].recall)),
        row("negatives caught", lambda e, _: percent(e.escalation.negatives_caught)),
        row("escalations negative", lambda e, _: percent(e.escalation.escalation_precision)),
        row("share escalated", lambda e, _: f"{e.escalation.share_escalated:.1%}"),
        row("threshold", lambda e, _: f"{e.escalation.threshold:.2f}"),
        row("ECE", lambda e, _: f"{e.ece:.4f}"),
        row("texts/s", lambda _, rate: f"{rate:,.0f}"),
    ]


def _escalation_line(row: Escalation) -> str:
    return (
        f"{row.threshold:.2f}: {row.share_escalated:.1%} of items escalated, "
        f"{percent(row.negatives_caught)} of true negatives caught, "
        f"{percent(row.escalation_precision)} of escalations truly negative"
    )


def percent(value: float | None) -> str:
    """A share as 12.3%, or - where there was nothing to divide by."""
    return "-" if value is None else f"{value:.1%}"


def _binning() -> str:
    return f"{ECE_BINS} equal-width score bins over [0.5, 1]"
