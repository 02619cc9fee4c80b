"""Calibrate: fit a temperature on labelled data and write it where the worker reads it (`triage-worker calibrate`).

The file is shuffled with a fixed seed and split: the temperature is fitted on one part and judged
on the held-out part, where ECE and accuracy are reported before and after. With a target
(escalation precision, or the share of items escalated), the threshold meeting it on the held-out
part is written beside the temperature; the worker uses it unless TRIAGE_LOW_CONFIDENCE_THRESHOLD
is set. The margins come from an uncalibrated classifier, so an older calibration never leaks in.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from worker.model.calibration import AUTO, OFF, Calibration, default_path, sigmoid
from worker.ops.quality.evaluate import Scored, percent
from worker.ops.quality.fitting import FitError, choose_threshold, fit_temperature
from worker.ops.quality.measures import Escalation, Evaluation, measure

MIN_EXAMPLES = 20  # per part, below which neither the fit nor its judgement mean much


@dataclass(frozen=True)
class Fitted:
    calibration: Calibration
    before: Evaluation  # on the held-out part, uncalibrated, at the configured threshold
    after: Evaluation  # on the held-out part, calibrated, at the threshold the worker will use
    chosen: Escalation | None  # the chosen threshold's figures, when a target was given
    fit_n: int
    holdout_n: int


def check_holdout(holdout: float) -> None:
    if not 0.0 < holdout < 1.0:
        raise FitError(f"--holdout must be between 0 and 1, got {holdout}")


def split(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Indexes of the fitting part and the held-out part."""
    check_holdout(holdout)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cut = round(n * holdout)
    held, fit = order[:cut], order[cut:]
    if len(held) < MIN_EXAMPLES or len(fit) < MIN_EXAMPLES:
        raise FitError(
            f"{n} examples split {len(fit)}/{len(held)} (fit/held out); each part needs at least {MIN_EXAMPLES}"
        )
    return fit, held


def fit(
    scored: Scored,
    *,
    model: str,
    revision: str = "",
    threshold: float,
    holdout: float = 0.3,
    seed: int = 0,
    min_precision: float | None = None,
    max_share: float | None = None,
    data: str = "",
) -> Fitted:
    fit_part, held = split(len(scored.predictions), holdout, seed)
    margins, truths = scored.margins, scored.truths
    temperature = fit_temperature([margins[i] for i in fit_part], [truths[i] for i in fit_part])
    held_truths = [truths[i] for i in held]
    before_probs = [sigmoid(margins[i]) for i in held]
    after_probs = [sigmoid(margins[i] / temperature) for i in held]
    chosen, rule = None, None
    if min_precision is not None or max_share is not None:
        chosen, rule = choose_threshold(held_truths, after_probs, min_precision=min_precision, max_share=max_share)
    before = measure(held_truths, before_probs, threshold)
    after = measure(held_truths, after_probs, chosen.threshold if chosen else threshold)
    calibration = Calibration(
        temperature=temperature,
        threshold=chosen.threshold if chosen else None,
        threshold_rule=rule,
        model=model,
        revision=revision,
        fitted={
            "data": data,
            "fit_examples": len(fit_part),
            "holdout_examples": len(held),
            "seed": seed,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "holdout_ece_before": round(before.ece, 5),
            "holdout_ece_after": round(after.ece, 5),
            "holdout_accuracy": round(after.accuracy, 5),
        },
    )
    return Fitted(calibration, before, after, chosen, len(fit_part), len(held))


def output_path(out: Path | None, setting: str, model: str) -> Path:
    """--out; else the path TRIAGE_CALIBRATION names; else beside a local model; else an error.
    Checked before the model runs, so an unwritable place fails at once."""
    if out is not None:
        path = out
    elif setting not in (AUTO, OFF):
        path = Path(setting).expanduser()
    else:
        beside = default_path(model)
        if beside is None:
            raise FitError(
                f"model {model!r} is not a local directory, so the calibration cannot go beside it; "
                "name a file with --out and point TRIAGE_CALIBRATION at it"
            )
        path = beside
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise FitError(f"cannot write the calibration to {path}: {folder} is not a writable folder; use --out")
    return path


def write(calibration: Calibration, path: Path) -> Path:
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(calibration.to_json(), encoding="utf-8")
        temporary.replace(path)  # a worker starting meanwhile reads the old file or the new one, never half
    except OSError as exc:
        reason = exc.strerror or exc
        raise FitError(f"cannot write the calibration to {path}: {reason}; name another file with --out") from None
    return path


def render(fitted: Fitted, path: Path) -> str:
    b, a = fitted.before, fitted.after
    lines = [
        f"fitted on {fitted.fit_n:,} examples, judged on {fitted.holdout_n:,} held out",
        f"temperature {fitted.calibration.temperature:.4f}",
        "",
        f"{'held-out part':24}{'before':>10}{'after':>10}",
        f"{'ECE':24}{b.ece:>10.4f}{a.ece:>10.4f}",
        f"{'Brier':24}{b.brier:>10.4f}{a.brier:>10.4f}",
        f"{'accuracy':24}{b.accuracy:>10.4f}{a.accuracy:>10.4f}",
        f"{'threshold':24}{b.escalation.threshold:>10.2f}{a.escalation.threshold:>10.2f}",
        f"{'share escalated':24}{b.escalation.share_escalated:>10.1%}{a.escalation.share_escalated:>10.1%}",
        f"{'negatives caught':24}{percent(b.escalation.negatives_caught):>10}"
        f"{percent(a.escalation.negatives_caught):>10}",
        f"{'escalations negative':24}{percent(b.escalation.escalation_precision):>10}"
        f"{percent(a.escalation.escalation_precision):>10}",
        "",
    ]
    if fitted.calibration.threshold is not None:
        lines.append(
            f"threshold {fitted.calibration.threshold:.2f} chosen for {fitted.calibration.threshold_rule} "
            "(used unless TRIAGE_LOW_CONFIDENCE_THRESHOLD is set)"
        )
    lines.append(f"calibration written to {path}")
    return "\n".join(lines)
