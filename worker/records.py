"""Typed values passed between the stages: what each stage takes and what it hands on.

RawRecord (source) -> FeedbackItem | Rejection (decode) -> Prediction (classifier)
-> TriageDecision (triage) -> ClassifiedItem (the row the store writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Sentiment = Literal["positive", "negative"]


@dataclass(frozen=True)
class RawRecord:
    """One Kafka record exactly as it came off the wire."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class FeedbackItem:
    """A valid feedback event, ready to classify, still tied to its record."""

    record: RawRecord
    event_id: str
    text: str
    source: str | None = None
    product: str | None = None
    customer_id: str | None = None
    created_at: datetime | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rejection:
    """A record that cannot be processed; it goes to the dead-letter topic unchanged."""

    record: RawRecord
    error_class: str
    message: str


@dataclass(frozen=True)
class Prediction:
    """The classifier's answer for one text."""

    label: Sentiment
    score: float  # probability of `label`
    negative_prob: float
    raw_label: str  # the model's own label name, e.g. LABEL_0


@dataclass(frozen=True)
class TriageDecision:
    escalate: bool
    reason: Literal["negative", "low_confidence"] | None


@dataclass(frozen=True)
class ClassifiedItem:
    """Everything the store needs for one result row."""

    item: FeedbackItem
    prediction: Prediction
    decision: TriageDecision
    model: str
    inference_ms: float
    batch_size: int
