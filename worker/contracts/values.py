"""Values: what each stage takes and hands on, as frozen dataclasses.

RawRecord (source) -> FeedbackItem | Rejection (decode) -> Prediction (model)
-> TriageDecision (triage) -> ClassifiedItem (the row the store writes) -> StoreOutcome.
"Record" always means a Kafka record here; an "item" is a valid feedback event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from worker.contracts.errors import ErrorClass

Sentiment = Literal["positive", "negative"]
EscalationReason = Literal["negative", "low_confidence", "audit"]  # audit: drawn for the audit sample, not escalated
StoreText = Literal["all", "escalated", "none"]  # TRIAGE_STORE_TEXT


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
    # The record's Kafka timestamp, when Python and PostgreSQL can hold it (a producer that writes
    # microseconds where Kafka wants milliseconds gives year 55,000); None otherwise.
    kafka_time: datetime | None = None
    schema_id: int | None = None  # the Schema Registry id the producer framed the value with, if it did
    # Input headers to copy onto the messages about this event (TRIAGE_PASSTHROUGH_HEADERS), UTF-8 values only.
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Rejection:
    """A record that cannot be processed; it goes to the dead-letter topic unchanged."""

    record: RawRecord
    error_class: ErrorClass
    message: str  # never the feedback text: it is logged
    extra_headers: tuple[tuple[str, str], ...] = ()  # more context for the dead-letter topic only


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one text."""

    label: Sentiment
    score: float  # probability of `label`
    negative_prob: float
    raw_label: str  # the model's own label name, e.g. LABEL_0
    margin: float = 0.0  # negative logit minus positive logit, before calibration (calibrate fits on it)
    # With a category head (see worker/model/category_head.py): its top category and that one's
    # probability, calibrated; None for a model without one. Routing (runtime/routing.py) decides
    # whether the item goes to that category's team.
    category: str | None = None
    category_score: float | None = None
    category_logits: tuple[float, ...] | None = None  # kept only for evaluate and calibrate (keep_category_logits)


@dataclass(frozen=True)
class ClassificationFailure:
    """One text the model could not classify even alone (e.g. out of memory)."""

    message: str


CategorySource = Literal["model", "reviewer"]


@dataclass(frozen=True)
class Route:
    """Which team an item goes to (see worker/runtime/routing.py). `category` is `general` when the item
    is not routed: under the category threshold, a gated category, or the head said `general`."""

    category: str  # the team's category, or `general`
    predicted: str  # the category head's top answer, routed or not
    score: float  # the head's (calibrated) probability of `predicted`
    destination: str | None  # the category's route (a topic, or a key for a router); None: general
    source: CategorySource = "model"


@dataclass(frozen=True)
class TriageDecision:
    escalate: bool
    reason: EscalationReason | None
    audit: bool = False  # not escalated, but drawn for the audit sample: it goes to the reviewers too
    route: Route | None = None  # with categories (TRIAGE_CATEGORIES and a model with a category head)


@dataclass(frozen=True)
class ShadowAnswer:
    """What a shadow candidate said about an item, and what its policy would have done: stored, never acted on."""

    model: str
    model_revision: str
    calibration: str | None
    prediction: Prediction
    decision: TriageDecision


@dataclass(frozen=True)
class ClassifiedItem:
    """Everything the store needs for one result row."""

    item: FeedbackItem
    prediction: Prediction
    decision: TriageDecision
    model: str
    inference_ms: float
    batch_size: int
    calibration: str | None = None  # the id of the calibration that produced the score; None: uncalibrated
    model_revision: str | None = None  # the model's identity: hub commit or directory digest
    shadow: ShadowAnswer | None = None  # the shadow candidate's answer, with TRIAGE_SHADOW_MODEL


@dataclass(frozen=True)
class Refusal:
    """A record whose values the database refused (SQLSTATE class 22 or 23): it goes to the dead-letter topic."""

    event_id: str
    record: RawRecord
    sqlstate: str
    name: str  # the driver's name for the SQLSTATE, e.g. InvalidTextRepresentation
    message: str  # the server's primary message; it may quote a value, so it goes to headers, never logs

    def rejection(self) -> Rejection:
        return Rejection(
            self.record,
            ErrorClass.STORE_REJECTED,
            f"the database refused a value in it: SQLSTATE {self.sqlstate} ({self.name})",
            extra_headers=(("triage.error.sqlstate", self.sqlstate), ("triage.error.database_message", self.message)),
        )


@dataclass(frozen=True)
class StoreOutcome:
    """What one store call did (one transaction, or more when it had to isolate refused records)."""

    inserted: int
    escalations: int
    duplicates: tuple[str, ...]  # event ids already stored, or repeated within the batch
    refused: tuple[Refusal, ...] = ()
    audits: int = 0  # audit-sample items sent to the reviewers (not counted in `escalations`)
