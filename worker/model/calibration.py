"""Calibration: the temperature (and optionally the escalation threshold) fitted by `triage-worker calibrate`.

A two-class model's answer is one number, the margin: the negative logit minus the positive one.
Temperature scaling divides it by T before the sigmoid, so the probabilities move and the labels do
not. The classifier applies the calibration to every answer; each stored row names the calibration
by its id (the first 12 hex digits of the file's SHA-256), so a score can always be traced to it.

A model with a category head (see `category_head`) gets a second section, `category`: the temperature
of the category softmax, the routing threshold that reached a target routed accuracy, and the figures
of each category on the calibration data (its F1 decides whether the category is gated).

Where the file lives (TRIAGE_CALIBRATION): `auto` reads `triage-calibration.json` beside a model
that is a local directory, if there is one; a path reads that file (it must exist); `off` uses none.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from worker.contracts.errors import OperatorError

FILE_NAME = "triage-calibration.json"
AUTO, OFF = "auto", "off"


class CalibrationError(OperatorError):
    """The calibration file is missing, unreadable or not a calibration."""


@dataclass(frozen=True)
class Calibration:
    temperature: float
    threshold: float | None = None  # chosen by calibrate for a target; None: the configured one
    threshold_rule: str | None = None  # e.g. "escalation precision >= 0.8"
    model: str = ""
    revision: str = ""  # the model's identity when fitted (see `identity`); "" in files from before it was kept
    fitted: dict[str, Any] = field(default_factory=dict)  # how and on what it was fitted, for people
    category: CategoryCalibration | None = None  # for a model with a category head
    id: str = ""  # set by `load`: a digest of the file

    def negative_probability(self, margin: float) -> float:
        return sigmoid(margin / self.temperature)

    def to_json(self) -> str:
        fields = asdict(self)
        del fields["id"]
        return json.dumps(fields, indent=2) + "\n"


@dataclass(frozen=True)
class CategoryCalibration:
    temperature: float = 1.0  # divides the category logits before the softmax
    threshold: float | None = None  # route only at or above this category score; None: the setting's
    threshold_rule: str | None = None  # e.g. "routed accuracy >= 0.9"
    figures: dict[str, dict[str, float]] = field(default_factory=dict)  # per category: f1, support


def softmax_top(logits: Sequence[float], temperature: float) -> tuple[int, float]:
    """The index of the top logit and its probability under a softmax of `logits / temperature`: the
    category head's answer, as the classifier serves it and as evaluate and calibrate measure it."""
    scaled = [x / temperature for x in logits]
    top = max(range(len(scaled)), key=scaled.__getitem__)
    return top, 1.0 / sum(math.exp(x - scaled[top]) for x in scaled)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def load(path: Path) -> Calibration:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration {path}: {exc.strerror or exc}") from None
    try:
        fields = json.loads(raw)
        temperature = float(fields["temperature"])
        threshold = fields.get("threshold")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        category = _category_section(fields.get("category"))
    except (ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(f"{path} is not a calibration written by `triage-worker calibrate`: {exc}") from None
    return Calibration(
        temperature=temperature,
        threshold=None if threshold is None else float(threshold),
        threshold_rule=fields.get("threshold_rule"),
        model=str(fields.get("model", "")),
        revision=str(fields.get("revision", "")),
        fitted=dict(fields.get("fitted") or {}),
        category=category,
        id=hashlib.sha256(raw).hexdigest()[:12],
    )


def _category_section(fields: dict[str, Any] | None) -> CategoryCalibration | None:
    if fields is None:
        return None
    temperature = float(fields.get("temperature", 1.0))
    threshold = fields.get("threshold")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"category temperature must be a positive number, got {temperature}")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"category threshold must be within [0, 1], got {threshold}")
    return CategoryCalibration(
        temperature=temperature,
        threshold=None if threshold is None else float(threshold),
        threshold_rule=fields.get("threshold_rule"),
        figures={str(k): dict(v) for k, v in (fields.get("figures") or {}).items()},
    )


def default_path(model: str) -> Path | None:
    """Where a calibration of `model` lives by default: beside it, when it is a local directory."""
    directory = Path(model).expanduser()
    return directory / FILE_NAME if directory.is_dir() else None


def resolve(setting: str, model: str) -> Calibration | None:
    """The calibration TRIAGE_CALIBRATION names for `model` (see the module docstring)."""
    if setting == OFF:
        return None
    if setting == AUTO:
        path = default_path(model)
        return load(path) if path is not None and path.is_file() else None
    return load(Path(setting).expanduser())
