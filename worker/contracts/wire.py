"""Wire contract: the pydantic models of every event the worker reads or writes.

`schemas/*.json` are generated from these models (`triage-worker schemas`), and a test keeps them in
step. A version (`.v2`) is a promise to its consumers: `schemas/released/` keeps every version as it
was first published, and a test fails when a model changes in a way its released version's consumers
would refuse (see compatibility). Such a change is a new version, published beside the old one. Every
message the worker writes names its version in a `triage.schema` header.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictStr

from worker.contracts.errors import ErrorClass
from worker.contracts.values import CategorySource, EscalationReason

SCHEMA_HEADER = "triage.schema"  # on every message the worker writes: the version of its schema
ORIGIN_HEADER = "triage.origin"  # on a replayed record: where it was first consumed, topic:partition:offset
# A record's bytes on the wire beyond its key, value and headers (the v2 batch header and the varints),
# rounded up, so that what `message_bytes` admits fits a limit the broker checks on the whole batch.
RECORD_OVERHEAD_BYTES = 128
EVENT_ID_MAX_CHARS = 256
SHORT_FIELD_MAX_CHARS = 256


class FeedbackEvent(BaseModel):
    """`feedback-event.v1`: one piece of customer feedback on the input topic."""

    model_config = ConfigDict(
        extra="ignore",
        title="feedback-event.v1",
        json_schema_extra={"$id": "feedback-event.v1.json"},
    )

    text: StrictStr = Field(min_length=1, description="The feedback text; not empty or blank.")
    event_id: StrictStr | None = Field(
        None,
        min_length=1,
        max_length=EVENT_ID_MAX_CHARS,
        description="Idempotency key. When absent the worker uses "
        "'<topic>:<partition>:<offset>:<digest of key and value>'.",
    )
    source: StrictStr | None = Field(
        None, max_length=SHORT_FIELD_MAX_CHARS, description="e.g. app-store, survey, zendesk"
    )
    product: StrictStr | None = Field(None, max_length=SHORT_FIELD_MAX_CHARS)
    customer_id: StrictStr | None = Field(None, max_length=SHORT_FIELD_MAX_CHARS)
    created_at: AwareDatetime | None = Field(None, description="RFC 3339 timestamp with a UTC offset.")
    metadata: dict[str, Any] | None = Field(None, description="Free-form object, stored as JSONB.")


class EscalationEvent(BaseModel):
    """`escalation-event.v3`: a result a human should look at; key = event_id. (v1 had no `audit` reason;
    v2 no category. A v2 consumer reads v3: the new fields are optional and v2 allowed extra ones.)"""

    model_config = ConfigDict(
        title="escalation-event.v3",
        json_schema_extra={"$id": "escalation-event.v3.json"},
    )

    event_id: str
    label: Literal["positive", "negative"]
    score: float = Field(ge=0.0, le=1.0, description="Probability of the predicted label.")
    reason: EscalationReason
    source: str | None
    product: str | None
    customer_id: str | None
    created_at: datetime | None
    model: str
    model_revision: str | None = Field(
        None, description="Which weights scored it: sha:<hub commit> or dir:<content digest>, 12 hex digits."
    )
    text: str | None = Field(description="Null when TRIAGE_STORE_TEXT=none.")
    metadata: dict[str, Any] | None = Field(
        None, description="The producer's `metadata`, as sent (a ticket URL, an order id); null when it sent none."
    )
    escalated_at: datetime
    category: str | None = Field(
        None,
        description="The team it is routed to (TRIAGE_CATEGORIES), or `general` when it is not routed; null "
        "when the model has no category head. Also in the `triage.category` header.",
    )
    category_score: float | None = Field(
        None, ge=0.0, le=1.0, description="The category head's calibrated probability of its top category."
    )
    category_source: CategorySource | None = Field(
        None, description="`model` (the category head) or `reviewer` (re-routed by `triage-worker ack --category`)."
    )


class TriageResult(BaseModel):
    """`triage-result.v2`: every stored result, for pipelines downstream (TRIAGE_RESULTS_TOPIC); key = event_id.
    (v1 had no `audit` reason.)"""

    model_config = ConfigDict(
        title="triage-result.v2",
        json_schema_extra={"$id": "triage-result.v2.json"},
    )

    event_id: str
    label: Literal["positive", "negative"]
    score: float = Field(ge=0.0, le=1.0, description="Probability of the predicted label.")
    negative_prob: float = Field(ge=0.0, le=1.0)
    escalated: bool
    reason: EscalationReason | None = Field(description="Why it was escalated; null when it was not.")
    model: str
    model_revision: str | None = Field(
        None, description="Which weights scored it: sha:<hub commit> or dir:<content digest>, 12 hex digits."
    )
    source: str | None
    product: str | None
    customer_id: str | None
    created_at: datetime | None
    processed_at: datetime
    text: str | None = Field(description="Null when TRIAGE_STORE_TEXT keeps no text for this result.")
    metadata: dict[str, Any] | None = Field(
        None, description="The producer's `metadata`, as sent (a ticket URL, an order id); null when it sent none."
    )


class DeadLetterHeaders(BaseModel):
    """`dead-letter.v1`: the headers on a dead letter. The value and key are the original bytes."""

    model_config = ConfigDict(
        title="dead-letter.v1",
        json_schema_extra={
            "$id": "dead-letter.v1.json",
            "description": "Headers of a record on the dead-letter topic (UTF-8 strings). "
            "The record's key and value are the original bytes, unchanged.",
        },
    )

    error_class: ErrorClass = Field(alias="triage.error.class", description="Machine-readable reason.")
    error_message: str = Field(alias="triage.error.message", description="Readable explanation.")
    source_topic: str = Field(alias="triage.source.topic")
    source_partition: str = Field(alias="triage.source.partition")
    source_offset: str = Field(alias="triage.source.offset")
    failed_at: str = Field(alias="triage.failed_at", description="RFC 3339 time of the decision.")
    sqlstate: str | None = Field(
        None, alias="triage.error.sqlstate", description="store_rejected only: PostgreSQL's SQLSTATE for the refusal."
    )
    database_message: str | None = Field(
        None,
        alias="triage.error.database_message",
        description="store_rejected only: the server's message; it may quote a value of the event.",
    )
    value_omitted_bytes: str | None = Field(
        None,
        alias="triage.value.omitted_bytes",
        description="Set when the value was too large to send: its size in bytes; the value is then null.",
    )
    headers_omitted: str | None = Field(
        None,
        alias="triage.headers.omitted",
        description="Set when the record's own headers were too large to send too: how many were left out.",
    )
    reduced: str | None = Field(
        None,
        alias="triage.reduced",
        description="'minimal' when nothing but the error class and the source position fitted: key, value, "
        "message and the record's headers are left out.",
    )
    origin: str | None = Field(
        None,
        alias=ORIGIN_HEADER,
        description="A replayed record's first place, 'topic:partition:offset' (see deadletters replay).",
    )
    schema_version: str | None = Field(None, alias=SCHEMA_HEADER, description="'dead-letter.v1'.")


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "feedback-event.v1.json": FeedbackEvent,
    "escalation-event.v3.json": EscalationEvent,
    "triage-result.v2.json": TriageResult,
    "dead-letter.v1.json": DeadLetterHeaders,
}
WRITTEN = {"escalation-event", "triage-result", "dead-letter"}  # the worker writes these; it reads feedback-event


def version_of(model: type[BaseModel]) -> str:
    """The version a message of `model` names in its `triage.schema` header: `escalation-event.v3`."""
    return str(model.model_config.get("title"))


def message_bytes(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """An upper bound of a record's size as the broker's message.max.bytes counts it."""
    header_bytes = sum(len(name.encode()) + len(data) + 10 for name, data in headers)
    return RECORD_OVERHEAD_BYTES + len(key or b"") + len(value or b"") + header_bytes


def render_schema(model: type[BaseModel]) -> str:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema(by_alias=True)}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    """Write every wire schema into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMA_MODELS.items():
        path = directory / name
        path.write_text(render_schema(model), encoding="utf-8")
        written.append(path)
    return written
