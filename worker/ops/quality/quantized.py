"""Quantized: what int8 costs on a labelled file (`evaluate --compare-quantized`).

The same texts through fp32 torch and ONNX Runtime int8, judged at fp32's threshold, side by side:
every figure `evaluate` gives for each, the labels int8 changed, and the deltas that matter for
triage (accuracy, negatives predicted, negatives caught).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker.contracts.errors import OperatorError
from worker.ops.quality import evaluate, measures
from worker.ops.quality.labelled import Example
from worker.settings import Settings

ENGINES = {"fp32": "torch", "int8": "onnx-int8"}


@dataclass(frozen=True)
class Comparison:
    data: str
    model: str
    calibration: str | None
    threshold: float
    texts: int
    figures: dict[str, measures.Evaluation]  # by name in ENGINES
    texts_per_s: dict[str, float]
    described: dict[str, dict[str, Any]]  # each classifier's describe()
    labels_changed: int


def compare(settings: Settings, examples: Sequence[Example], data: str) -> Comparison:
    from worker.runtime.wiring import build_classifier, build_policy

    classifiers = {name: build_classifier(settings.with_overrides(engine=engine)) for name, engine in ENGINES.items()}
    threshold = build_policy(settings, classifiers["fp32"]).threshold
    scored = {name: evaluate.score(classifier, examples) for name, classifier in classifiers.items()}
    if any(len(s.predictions) != len(examples) for s in scored.values()):
        failed = {name: s.failed for name, s in scored.items()}
        raise OperatorError(f"some texts could not be classified ({failed}); compare on a file every engine takes")
    figures = {name: measures.measure(s.truths, s.negative_probs, threshold, s.weights) for name, s in scored.items()}
    changed = sum(
        a.label != b.label for a, b in zip(scored["fp32"].predictions, scored["int8"].predictions, strict=True)
    )
    return Comparison(
        data=data,
        model=settings.model,
        calibration=classifiers["fp32"].calibration_id,
        threshold=threshold,
        texts=len(examples),
        figures=figures,
        texts_per_s={name: s.texts_per_s for name, s in scored.items()},
        described={name: classifier.describe() for name, classifier in classifiers.items()},
        labels_changed=changed,
    )


def render(found: Comparison) -> str:
    fp32, int8 = found.figures["fp32"], found.figures["int8"]
    caught = (int8.escalation.negatives_caught or 0) - (fp32.escalation.negatives_caught or 0)
    negatives = int8.per_class["negative"].recall - fp32.per_class["negative"].recall
    accuracy = int8.accuracy - fp32.accuracy
    return "\n".join(
        [
            f"{found.texts:,} texts from {found.data}, model {found.model} "
            f"(calibration {found.calibration or 'none'}, threshold {found.threshold:.2f})",
            "",
            *evaluate.side_by_side({name: (found.figures[name], found.texts_per_s[name]) for name in ENGINES}),
            "",
            f"labels changed by int8: {found.labels_changed:,} of {found.texts:,} "
            f"({found.labels_changed / found.texts:.2%}); accuracy {100 * accuracy:+.2f} points, "
            f"negatives predicted {100 * negatives:+.2f} points, negatives caught {100 * caught:+.2f} points",
        ]
    )


def as_json(found: Comparison) -> str:
    about = {"data": found.data, "labels_changed": found.labels_changed, "threshold": found.threshold}
    both = {name: json.loads(evaluate.as_json(found.figures[name], found.described[name])) for name in ENGINES}
    return json.dumps({**about, **both}, indent=2) + "\n"
