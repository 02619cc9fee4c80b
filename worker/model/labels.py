"""Label normalisation: map a model's `id2label` onto `positive` / `negative`.

Knows the conventions of the model cards (POSITIVE/NEGATIVE, LABEL_0=negative/LABEL_1=positive)
and their common variants (pos/neg, any case). Anything else needs TRIAGE_LABEL_MAP, and an
incomplete or ambiguous mapping fails at start-up rather than producing wrong labels.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.contracts.values import Sentiment

KNOWN_LABELS: dict[str, Sentiment] = {
    "positive": "positive",
    "pos": "positive",
    "label_1": "positive",
    "negative": "negative",
    "neg": "negative",
    "label_0": "negative",
}


class LabelMappingError(ValueError):
    """The model's labels cannot be mapped onto positive/negative."""


def normalise_labels(id2label: Mapping[int, str], override: Mapping[str, str] | None = None) -> dict[int, Sentiment]:
    """Return {class index: sentiment}. `override` keys may be label names or indexes."""
    mapping: dict[int, Sentiment] = {}
    override = {k.lower(): v.lower() for k, v in (override or {}).items()}
    for index, raw in sorted(id2label.items()):
        choice = override.get(str(raw).lower()) or override.get(str(index)) or KNOWN_LABELS.get(str(raw).lower())
        if choice not in ("positive", "negative"):
            raise LabelMappingError(
                f"model label {raw!r} (index {index}) has no known sentiment; "
                "set TRIAGE_LABEL_MAP, e.g. 'LABEL_0=negative,LABEL_1=positive'"
            )
        mapping[int(index)] = choice  # type: ignore[assignment]
    found = sorted(mapping.values())
    if found != ["negative", "positive"]:
        raise LabelMappingError(
            f"expected exactly one negative and one positive label, got {dict(id2label)} -> {found}"
        )
    return mapping
