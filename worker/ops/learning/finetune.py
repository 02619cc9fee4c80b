"""Finetune: train a new model on a labelled file and judge it beside its base (`triage-worker finetune`).

Repeated texts are merged first (one example each, the label most of its copies give), so no text
is both trained on and judged. The file is then split with a seed: `--holdout` of it is kept out of
training altogether and judges the result; a tenth of the rest is the validation set that early
stopping watches. On the held-out part, the base model (as the worker runs it, with its calibration)
and the new one are measured side by side with `evaluate`'s figures. The new model's temperature is
fitted on the held-out part and written beside it; the calibrated figures in the table come from
two-fold cross-fitting (each half scored with the temperature fitted on the other), so they are
never judged on their own fit. A threshold is chosen only for a target
(`--target-escalation-precision`, `--max-escalation-share`): the one written is chosen on the whole
held-out part, and the escalation figures shown judge each half at the threshold chosen on the other.

Everything is written to a scratch folder beside `--out` and renamed to it only once all of it is
written: a failure leaves no half-written model, and the same `--out` can be used again. It holds the
weights, the tokenizer, the calibration and a card (`triage-card.json` and a README.md): base model
and revision, data file digest and size, recipe, the held-out figures and the date.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from worker.contracts.categories import CategoryList
from worker.contracts.errors import OperatorError
from worker.contracts.values import Sentiment
from worker.model.calibration import FILE_NAME as CALIBRATION_FILE
from worker.model.calibration import Calibration, CategoryCalibration, sigmoid
from worker.model.training.finetune import CategoryTraining, LabelledTexts, Weighting, finetune
from worker.model.training.loop import Recipe
from worker.ops.progress import StepBar
from worker.ops.quality import calibrate, category_measures, evaluate
from worker.ops.quality.fitting import THRESHOLD_GRID, FitError, choose_threshold, fit_temperature
from worker.ops.quality.labelled import Example
from worker.ops.quality.measures import Escalation, Evaluation, escalation_at, measure
from worker.settings import Settings

CARD_FILE = "triage-card.json"
VALIDATION_SHARE = 0.1  # of the training part, for early stopping
# Chosen by measurement on the shared customer reviews (worker/docs/model-quality.md, "Fine-tuning").
DEFAULT_EPOCHS = 2
DEFAULT_LEARNING_RATE = 5e-5
DEFAULT_MAX_LENGTH = 128
DEFAULT_WEIGHTING: Weighting = "sqrt"
DEFAULT_HEAD_LEARNING_RATE = 1e-3  # a new category head's own rate (see worker/docs/categories.md)
DEFAULT_CATEGORY_TRAINING: CategoryTraining = "joint"


@dataclass(frozen=True)
class Judged:
    """One model on the held-out part."""

    name: str
    revision: str
    evaluation: Evaluation  # labels at 0.5; probabilities calibrated as the worker would run it
    texts_per_s: float


@dataclass(frozen=True)
class Outcome:
    base: Judged
    new: Judged
    calibration: Calibration
    card: dict[str, Any]
    out: Path


def recipe(
    epochs: int | None,
    learning_rate: float | None,
    batch_size: int,
    max_length: int | None,
    seed: int,
    head_learning_rate: float | None = None,
) -> Recipe:
    """The recipe from the verb's options, the measured defaults where one is not given."""
    for option, value in (("--epochs", epochs), ("--batch-size", batch_size), ("--max-length", max_length)):
        if value is not None and value < 1:
            raise OperatorError(f"{option} must be at least 1, got {value}")
    if learning_rate is not None and not 0 < learning_rate < 1:
        raise OperatorError(f"--learning-rate must be between 0 and 1, got {learning_rate}")
    return Recipe(
        epochs=epochs or DEFAULT_EPOCHS,
        learning_rate=learning_rate or DEFAULT_LEARNING_RATE,
        batch_size=batch_size,
        max_length=max_length or DEFAULT_MAX_LENGTH,
        seed=seed,
        head_learning_rate=head_learning_rate or DEFAULT_HEAD_LEARNING_RATE,
    )


def split_three(examples: Sequence[Example], holdout: float, seed: int) -> tuple[list[Example], ...]:
    """(training, validation, held out): held out first, then a tenth of the rest for validation."""
    rest, held = calibrate.split(len(examples), holdout, seed)
    rng = random.Random(seed + 1)
    rng.shuffle(rest)
    cut = max(calibrate.MIN_EXAMPLES, round(len(rest) * VALIDATION_SHARE))
    if len(rest) - cut < calibrate.MIN_EXAMPLES:
        raise OperatorError(f"{len(examples)} examples are too few to fine-tune on: the training part would be empty")
    return [examples[i] for i in rest[cut:]], [examples[i] for i in rest[:cut]], [examples[i] for i in held]


def data_identity(path: Path, examples: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return {"file": str(path), "sha256": digest.hexdigest(), "bytes": path.stat().st_size, "examples": examples}


def run(
    settings: Settings,
    *,
    data: Path,
    examples: Sequence[Example],
    base: str,
    out: Path,
    recipe: Recipe,
    weighting: Weighting,
    holdout: float,
    min_precision: float | None = None,
    max_share: float | None = None,
    show_progress: bool = True,
    categories: CategoryList | None = None,
    category_training: CategoryTraining = DEFAULT_CATEGORY_TRAINING,
    target_routed_accuracy: float | None = None,
) -> Outcome:
    check_out(out)
    tags = [e.category for e in examples if e.category is not None]
    training_categories = None
    if tags:
        if categories is None:
            raise OperatorError("the data carries category tags: name the category file in TRIAGE_CATEGORIES")
        training_categories = Categories(categories, category_training, target_routed_accuracy)
    unique, merged = deduplicated(examples)
    training, validation, held = split_three(unique, holdout, recipe.seed)
    counts = {label: sum(e.label == label for e in training) for label in ("negative", "positive")}
    if min(counts.values()) == 0:
        raise OperatorError(f"fine-tuning needs examples of both labels; the training part has {counts}")
    check_halves(held)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.absolute().parent))
    try:
        outcome = _train_and_judge(
            settings, data, unique, merged, base, out, scratch, recipe, weighting, (training, validation, held),
            min_precision, max_share, show_progress, training_categories,
        )  # fmt: skip
        if out.exists():
            out.rmdir()  # empty: check_out said so
        os.replace(scratch, out)
        return outcome
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train_and_judge(
    settings: Settings,
    data: Path,
    examples: Sequence[Example],
    merged: int,
    base: str,
    out: Path,
    scratch: Path,
    recipe: Recipe,
    weighting: Weighting,
    parts: tuple[list[Example], list[Example], list[Example]],
    min_precision: float | None,
    max_share: float | None,
    show_progress: bool,
    categories: Categories | None = None,
) -> Outcome:
    """Train into `scratch` and write the calibration and card there, naming the model `out`."""
    from worker.model.loading import resolve_device
    from worker.runtime.wiring import build_classifier

    training, validation, held = parts
    base_classifier = build_classifier(settings.with_overrides(model=base))
    threshold = _threshold(settings, base_classifier)
    base_scored = evaluate.score(base_classifier, held, show_progress=show_progress)
    base_judged = Judged(
        base,
        base_classifier.revision,
        measure(base_scored.truths, base_scored.negative_probs, threshold, base_scored.weights),
        base_scored.texts_per_s,
    )
    del base_classifier

    bar = StepBar() if show_progress else None
    tuned = finetune(
        base,
        _texts(training),
        _texts(validation),
        recipe=recipe,
        weighting=weighting,
        truncation=settings.truncation,
        device=resolve_device(settings.device),
        label_map=settings.label_map,
        revision=settings.model_revision,
        on_step=bar,
        category_names=categories.defined.names if categories else None,
        category_training=categories.training if categories else "joint",
    )
    if bar is not None:
        bar.close()
    tuned.save(scratch, recipe=categories.training if categories else None, base=base)

    new_classifier = build_classifier(settings.with_overrides(model=str(scratch), calibration="off"))
    new_classifier.keep_category_logits = True
    new_scored = evaluate.score(new_classifier, held, show_progress=show_progress)
    probs = cross_fitted(new_scored.margins, new_scored.truths)
    chosen, rule = None, None
    new_threshold = settings.low_confidence_threshold
    evaluation = measure(new_scored.truths, probs, new_threshold, new_scored.weights)
    if min_precision is not None or max_share is not None:
        chosen, rule = choose_threshold(new_scored.truths, probs, min_precision=min_precision, max_share=max_share)
        new_threshold = chosen.threshold
        evaluation = replace(
            measure(new_scored.truths, probs, new_threshold, new_scored.weights),
            escalation=cross_judged(new_scored.truths, probs, new_scored.weights, min_precision, max_share, chosen),
        )
    new_judged = Judged(str(out), new_classifier.revision, evaluation, new_scored.texts_per_s)
    card = {
        "base_model": base,
        "base_revision": base_judged.revision,
        "revision": new_classifier.revision,
        "data": {**data_identity(data, len(examples) + merged), "repeats_merged": merged},
        "split": {"training": len(training), "validation": len(validation), "held_out": len(held)},
        "recipe": {**asdict(recipe), "weighting": weighting, "truncation": settings.truncation},
        "class_weights": tuned.class_weights,
        "training": {
            "steps": tuned.log.steps,
            "epochs_run": round(tuned.log.epochs_run, 2),
            "seconds": round(tuned.log.seconds, 1),
            "stopped_early": tuned.log.stopped_early,
            "validation_losses": [round(v, 5) for v in tuned.log.validation_losses],
            "device": str(resolve_device(settings.device)),
        },
        "held_out": {"base": _figures(base_judged.evaluation), "new": _figures(new_judged.evaluation)},
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    calibration = Calibration(
        temperature=fit_temperature(new_scored.margins, new_scored.truths),
        threshold=chosen.threshold if chosen else None,
        threshold_rule=rule,
        model=str(out),
        revision=new_classifier.revision,
        fitted={"data": str(data), "holdout_examples": len(held), "seed": recipe.seed, "by": "finetune"},
    )
    if categories is not None:
        section, figures = _category_section(settings, new_classifier.categories, new_scored, categories)
        calibration = replace(calibration, category=section)
        card["categories"] = {
            **figures.as_dict(),
            "training": categories.training,
            "head_learning_rate": recipe.head_learning_rate,
            "temperature": round(section.temperature, 4),
            "judged_on": "the odd half of the held-out part (temperature and threshold fitted on the even half)",
        }
    calibrate.write(calibration, scratch / CALIBRATION_FILE)
    (scratch / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (scratch / "README.md").write_text(render_card(card), encoding="utf-8")
    return Outcome(base_judged, new_judged, calibration, card, out)


@dataclass(frozen=True)
class Categories:
    """What `finetune` trains the category head on and how."""

    defined: CategoryList
    training: CategoryTraining
    target_routed_accuracy: float | None


def _category_section(
    settings: Settings, names: list[str], scored: evaluate.Scored, categories: Categories
) -> tuple[CategoryCalibration, category_measures.CategoryFigures]:
    """The category temperature and threshold fitted on the even half of the held-out tags, judged
    on the odd half: figures that never saw their own fit."""
    tagged = scored.tagged()
    return category_measures.fit(
        tagged[0::2],
        tagged[1::2],
        names,
        f1_floor=settings.category_f1_floor,
        threshold=settings.category_threshold,
        target=categories.target_routed_accuracy,
        keep_unmet=True,  # after the training, an unmet target is said, not fatal: the model is kept
    )


def deduplicated(examples: Sequence[Example]) -> tuple[list[Example], int]:
    """One example per text (the first of its copies, with the label most of them give; a tie keeps
    the first's), and how many copies were merged into it."""
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.text.strip(), []).append(example)
    unique = []
    for copies in groups.values():
        labels = [c.label for c in copies]
        majority = max(dict.fromkeys(labels), key=labels.count)  # first-seen order breaks a tie
        unique.append(copies[0] if copies[0].label == majority else replace(copies[0], label=majority))
    return unique, len(examples) - len(unique)


def check_halves(held: Sequence[Example]) -> None:
    """Each half of the held-out part judges the other's fits (temperature, threshold): it needs both
    labels. Said before training, not after it."""
    for name, half in (("even", held[0::2]), ("odd", held[1::2])):
        labels = {e.label for e in half}
        if len(labels) < 2:
            raise OperatorError(
                f"the held-out part ({len(held)} examples) has only {sorted(labels) or 'no'} labels in its "
                f"{name} half; give more data or a larger --holdout"
            )


def cross_judged(
    truths: Sequence[Sentiment],
    probs: Sequence[float],
    weights: Sequence[float] | None,
    min_precision: float | None,
    max_share: float | None,
    chosen: Escalation,
) -> Escalation:
    """The escalation figures with each half judged at the threshold chosen on the other half, labelled
    with the threshold chosen on the whole (the one written): never judged on the data that chose it."""
    halves = (range(0, len(truths), 2), range(1, len(truths), 2))
    thresholds = [chosen.threshold] * len(truths)
    for this, other in (halves, halves[::-1]):
        try:
            picked, _ = choose_threshold(
                [truths[i] for i in other], [probs[i] for i in other], min_precision=min_precision, max_share=max_share
            )
            at = picked.threshold
        except FitError:  # the other half meets the target nowhere: this half is judged at the lowest threshold
            at = THRESHOLD_GRID[0]
        for i in this:
            thresholds[i] = at
    return escalation_at(truths, probs, chosen.threshold, weights, thresholds)


def cross_fitted(margins: Sequence[float], truths: Sequence[Sentiment]) -> list[float]:
    """Negative probabilities where each half is calibrated by the temperature fitted on the other half."""
    halves = (range(0, len(margins), 2), range(1, len(margins), 2))
    probs = [0.0] * len(margins)
    for this, other in (halves, halves[::-1]):
        temperature = fit_temperature([margins[i] for i in other], [truths[i] for i in other])
        for i in this:
            probs[i] = sigmoid(margins[i] / temperature)
    return probs


def render(outcome: Outcome) -> str:
    columns = {
        "base": (outcome.base.evaluation, outcome.base.texts_per_s),
        "new": (outcome.new.evaluation, outcome.new.texts_per_s),
    }
    training = outcome.card["training"]
    split = outcome.card["split"]
    lines = [
        f"trained on {split['training']:,} examples ({split['validation']:,} for early stopping), "
        f"judged on {split['held_out']:,} held out",
        f"{training['steps']:,} steps, {training['epochs_run']} epochs in {training['seconds']:.0f} s on "
        f"{training['device']}" + (", stopped early" if training["stopped_early"] else ""),
        "",
        "held-out part:",
        *evaluate.side_by_side(columns),
        "",
        f"base: {outcome.base.name} ({outcome.base.revision})",
        f"new:  {outcome.new.name} ({outcome.new.revision}), temperature {outcome.calibration.temperature:.4f} "
        "(its figures above cross-fitted on the held-out part)",
    ]
    if outcome.calibration.threshold is not None:
        lines.append(f"threshold {outcome.calibration.threshold:.2f} chosen for {outcome.calibration.threshold_rule}")
    found = outcome.card.get("categories")
    if found:
        figures = category_measures.CategoryFigures(
            found["macro_f1"], found["per_category"], found["threshold"], found["routed_share"],
            found["routed_accuracy"], found["general_routed"], found["examples"], found["gated"], found.get("unmet"),
        )  # fmt: skip
        lines += ["", f"category head ({found['training']}), {found['judged_on']}:", *category_measures.render(figures)]
    lines.append(f"model, calibration and card written to {outcome.out}")
    return "\n".join(lines)


def render_card(card: dict[str, Any]) -> str:
    held = card["held_out"]
    lines = [
        f"# Fine-tuned from {card['base_model']}",
        "",
        f"Written by `triage-worker finetune` on {card['at']}. Revision {card['revision']}; base revision "
        f"{card['base_revision']}.",
        "",
        f"Data: {card['data']['file']} ({card['data']['examples']:,} examples, {card['data']['bytes']:,} bytes, "
        f"sha256 {card['data']['sha256'][:16]}...), split {card['split']}.",
        "",
        "| held-out figure | base | this model |",
        "| --- | --- | --- |",
    ]
    for name in held["base"]:
        lines.append(f"| {name} | {held['base'][name]} | {held['new'][name]} |")
    lines += ["", f"Recipe: {card['recipe']}", ""]
    return "\n".join(lines)


def _figures(evaluation: Evaluation) -> dict[str, Any]:
    e = evaluation.escalation
    return {
        "examples": evaluation.n,
        "accuracy": round(evaluation.accuracy, 4),
        "macro_f1": round(evaluation.macro_f1, 4),
        "negatives_caught": None if e.negatives_caught is None else round(e.negatives_caught, 4),
        "escalations_negative": None if e.escalation_precision is None else round(e.escalation_precision, 4),
        "share_escalated": round(e.share_escalated, 4),
        "threshold": e.threshold,
        "ece": round(evaluation.ece, 4),
    }


def _texts(examples: Sequence[Example]) -> LabelledTexts:
    return LabelledTexts(
        [e.text for e in examples],
        [e.label for e in examples],
        [e.weight for e in examples],
        [e.category for e in examples],
    )


def _threshold(settings: Settings, classifier: Any) -> float:
    from worker.runtime.wiring import build_policy

    return build_policy(settings, classifier).threshold


def check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OperatorError(f"--out {out} exists and is not an empty folder; name a new one")
