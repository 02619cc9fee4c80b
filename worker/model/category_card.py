"""Category card: what a model directory's category head predicts, read without torch.

`triage-categories.json`, written by `finetune` beside the head's weights
(`triage-category-head.safetensors`): the category names in head order, `general` last; where the
head reads its features; the held-out figures of each category. The routing policy reads the card,
and so does the cached ONNX path (see `onnx_serving`), which never loads torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from worker.contracts.categories import GENERAL
from worker.model.errors import ModelLoadError

CARD_FILE = "triage-categories.json"
WEIGHTS_FILE = "triage-category-head.safetensors"


@dataclass(frozen=True)
class HeadCard:
    """What the head predicts and how well it did when it was trained."""

    names: list[str]  # head order; the last is `general` (tagged, but no team's category)
    features: str  # the module whose input the head reads
    hidden_size: int
    # Held-out figures per category from `finetune`: {"f1": .., "support": ..}; `calibrate` may refresh them.
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    trained: dict[str, Any] = field(default_factory=dict)  # recipe, data sizes, when

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def read_card(directory: Path) -> HeadCard | None:
    """The card of the category head in `directory`, or None when the model has none."""
    path = directory / CARD_FILE
    if not path.is_file():
        return None
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        card = HeadCard(
            names=[str(n) for n in fields["names"]],
            features=str(fields["features"]),
            hidden_size=int(fields["hidden_size"]),
            figures={str(k): dict(v) for k, v in (fields.get("figures") or {}).items()},
            trained=dict(fields.get("trained") or {}),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} is not a category card written by `triage-worker finetune`: {exc}") from None
    if not card.names or card.names[-1] != GENERAL:
        raise ModelLoadError(f"{path}: the last category of the head must be {GENERAL!r}")
    return card
