"""Category figures: how well the category head routes, on tagged examples (evaluate, calibrate, finetune).

- `macro_f1`: the mean F1 of the defined categories (`general` left out: it is not a team), each
  from the head's top answer against the reviewer's tag;
- `per_category`: F1, precision, recall and support of each, and whether it is gated (its F1 under
  TRIAGE_CATEGORY_F1_FLOOR) and why;
- at the routing threshold: `routed_share` (of the negatives, the ones a team gets), `routed_accuracy`
  (of the tagged items routed, the ones routed to their tag's team) and `general_routed` (of the
  items tagged `general`, the ones sent to a team anyway: noise in a team's queue).

The temperature divides the head's logits before the softmax, fitted by the log-loss on tagged
examples like the sentiment one; `choose_threshold` picks the lowest category score at which the
routed accuracy reaches a target, so that the most items are routed while it holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from worker.contracts.categories import GENERAL
from worker.contracts.errors import OperatorError
from worker.model.calibration import CategoryCalibration, softmax_top
from worker.runtime.routing import gated_because

THRESHOLDS = tuple(round(0.30 + 0.01 * i, 2) for i in range(70))  # 0.30 .. 0.99


@dataclass(frozen=True)
class Tagged:
    """One tagged example as the head answered it."""

    tag: str  # the reviewer's category, or `general`
    negative: bool  # the reviewer's (or file's) sentiment label
    logits: tuple[float, ...]  # the head's, in `names` order


@dataclass(frozen=True)
class CategoryFigures:
    macro_f1: float
    per_category: dict[str, dict[str, Any]]
    threshold: float
    routed_share: float | None  # None: no negatives among the examples
    routed_accuracy: float | None  # None: nothing routed
    general_routed: float | None  # None: nothing tagged `general`
    examples: int
    gated: dict[str, str] = field(default_factory=dict)
    unmet: str | None = None  # why no threshold met --target-routed-accuracy (the configured one applies)

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "macro_f1": round(self.macro_f1, 4),
            "threshold": self.threshold,
            "routed_share": _round(self.routed_share),
            "routed_accuracy": _round(self.routed_accuracy),
            "general_routed": _round(self.general_routed),
            "per_category": self.per_category,
            "gated": self.gated,
            **({"unmet": self.unmet} if self.unmet else {}),
        }


def fit_temperature(examples: Sequence[Tagged], names: Sequence[str]) -> float:
    """The temperature with the lowest log-loss of the tags (golden-section search on log T)."""
    index = {name: i for i, name in enumerate(names)}
    known = [(e.logits, index[e.tag]) for e in examples if e.tag in index]
    if len(known) < 10:
        raise OperatorError(f"{len(known)} tagged examples are too few to fit a category temperature (10 at least)")

    def loss(log_t: float) -> float:
        t = math.exp(log_t)
        total = 0.0
        for logits, truth in known:
            scaled = [x / t for x in logits]
            top = max(scaled)
            total += top + math.log(sum(math.exp(x - top) for x in scaled)) - scaled[truth]
        return total

    low, high = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if loss(a) < loss(b):
            high = b
        else:
            low = a
    return math.exp((low + high) / 2)


def measure(
    examples: Sequence[Tagged],
    names: Sequence[str],
    *,
    temperature: float,
    threshold: float,
    f1_floor: float,
) -> CategoryFigures:
    """Every figure above, for the head whose categories are `names` (`general` last)."""
    answers = [softmax_top(e.logits, temperature) for e in examples]
    predicted = [names[i] for i, _ in answers]
    defined = [n for n in names if n != GENERAL]
    per: dict[str, dict[str, Any]] = {}
    for name in defined:
        tp = sum(p == name and e.tag == name for p, e in zip(predicted, examples, strict=True))
        said = sum(p == name for p in predicted)
        support = sum(e.tag == name for e in examples)
        precision = tp / said if said else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[name] = {"f1": round(f1, 4), "precision": round(precision, 4), "recall": round(recall, 4)}
        per[name]["support"] = support
    gated = {name: why for name in defined if (why := gated_because(per[name], f1_floor))}
    for name in defined:
        per[name]["gated"] = name in gated
    measured = [per[n]["f1"] for n in defined if per[n]["support"]]
    routed = [
        p != GENERAL and p not in gated and score >= threshold for p, (_, score) in zip(predicted, answers, strict=True)
    ]
    negatives = [r for r, e in zip(routed, examples, strict=True) if e.negative]
    sent = [(p, e) for p, r, e in zip(predicted, routed, examples, strict=True) if r]
    general = [r for r, e in zip(routed, examples, strict=True) if e.tag == GENERAL]
    return CategoryFigures(
        macro_f1=sum(measured) / len(measured) if measured else 0.0,
        per_category=per,
        threshold=threshold,
        routed_share=sum(negatives) / len(negatives) if negatives else None,
        routed_accuracy=sum(p == e.tag for p, e in sent) / len(sent) if sent else None,
        general_routed=sum(general) / len(general) if general else None,
        examples=len(examples),
        gated=gated,
    )


def choose_threshold(
    examples: Sequence[Tagged], names: Sequence[str], *, temperature: float, f1_floor: float, target: float
) -> CategoryFigures:
    """The figures at the lowest threshold whose routed accuracy reaches `target` (the most routed)."""
    if not 0.0 < target <= 1.0:
        raise OperatorError(f"--target-routed-accuracy must be in (0, 1], got {target}")
    for threshold in THRESHOLDS:
        found = measure(examples, names, temperature=temperature, threshold=threshold, f1_floor=f1_floor)
        if found.routed_accuracy is not None and found.routed_accuracy >= target:
            return found
    raise OperatorError(
        f"no category threshold up to {THRESHOLDS[-1]} reaches a routed accuracy of {target}: tag more items, "
        "or lower the target"
    )


def render(figures: CategoryFigures) -> list[str]:
    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    lines = [
        f"categories ({figures.examples:,} tagged): macro-F1 {figures.macro_f1:.3f}; at threshold "
        f"{figures.threshold:.2f}: {share(figures.routed_share)} of negatives routed to a team, "
        f"{share(figures.routed_accuracy)} of them to the right one, {share(figures.general_routed)} of "
        "`general` items sent to a team",
        f"  {'category':<24} {'F1':>6} {'support':>8}  routed",
    ]
    for name, row in figures.per_category.items():
        state = f"no: {figures.gated[name]}" if name in figures.gated else "yes"
        lines.append(f"  {name:<24} {row['f1']:>6.3f} {row['support']:>8,}  {state}")
    if figures.unmet:
        lines.append(f"  target not met; the configured threshold {figures.threshold:.2f} applies: {figures.unmet}")
    return lines


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def fit(
    fit_part: Sequence[Tagged],
    judge_part: Sequence[Tagged],
    names: Sequence[str],
    *,
    f1_floor: float,
    threshold: float,
    target: float | None,
    keep_unmet: bool = False,
) -> tuple[CategoryCalibration, CategoryFigures]:
    """The category section of a calibration: temperature (and, for a target, the threshold) fitted on
    `fit_part`; the figures (and so the gating) judged on `judge_part`, which took no part in the fit.
    With `keep_unmet`, a target no threshold meets leaves the configured threshold, said in `unmet`."""
    temperature = fit_temperature(fit_part, names)
    rule, unmet = None, None
    if target is not None:
        try:
            chosen = choose_threshold(fit_part, names, temperature=temperature, f1_floor=f1_floor, target=target)
            threshold, rule = chosen.threshold, f"routed accuracy >= {target}"
        except OperatorError as exc:
            if not keep_unmet:
                raise
            unmet = str(exc)
    figures = measure(judge_part, names, temperature=temperature, threshold=threshold, f1_floor=f1_floor)
    kept = {name: {"f1": row["f1"], "support": row["support"]} for name, row in figures.per_category.items()}
    section = CategoryCalibration(temperature, threshold if rule else None, rule, kept)
    return section, replace(figures, unmet=unmet)
