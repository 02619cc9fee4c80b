"""Decode: turn the bytes of one Kafka record into a FeedbackItem, or a Rejection with a reason.

Never raises on input. Every way a payload can be wrong maps to a stable `ErrorClass` that
travels in the dead-letter headers (see worker/contracts/errors.py). The rules PostgreSQL would
enforce at store time, and that are cheap to check here, are checked here: no NaN or infinite
number anywhere (`1e400` parses as infinity), no NUL or unpaired surrogate, no `created_at` offset
beyond PostgreSQL's +-15:59. What slips through anyway is isolated by the store (see store).
A record whose Kafka timestamp no datetime can hold (microseconds written as milliseconds) keeps
its event: it is stored without the timestamp.

A value in the Confluent wire format (what Schema Registry serializers write: the magic byte 0, a
4-byte big-endian schema id, then the payload) is unframed first and its schema id kept with the
row. JSON never starts with a zero byte, so a plain value cannot be mistaken for a framed one. With a
registry (see registry), an id it does not know is dead-lettered as `unknown_schema`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from pydantic import ValidationError

from worker.contracts.errors import ErrorClass
from worker.contracts.values import FeedbackItem, RawRecord, Rejection
from worker.contracts.wire import ORIGIN_HEADER, FeedbackEvent


class Decoder:
    """Validates records against `feedback-event.v1` and the size limits."""

    def __init__(
        self,
        max_text_chars: int,
        max_value_bytes: int = 1_048_576,
        passthrough_headers: tuple[str, ...] = (),
        schema_known: Callable[[int], bool] | None = None,
    ) -> None:
        self.max_text_chars = max_text_chars
        self.max_value_bytes = max_value_bytes
        self.schema_known = schema_known  # with TRIAGE_SCHEMA_REGISTRY_URL: registry.SchemaRegistry.knows
        self.passthrough = {name.lower() for name in passthrough_headers}

    def decode(self, record: RawRecord) -> FeedbackItem | Rejection:
        def reject(error_class: ErrorClass, message: str) -> Rejection:
            return Rejection(record=record, error_class=error_class, message=message)

        value = record.value
        if value is None:
            return reject(ErrorClass.MISSING_VALUE, "record has no value (tombstone)")
        if len(value) > self.max_value_bytes:
            return reject(ErrorClass.VALUE_TOO_LARGE, f"value is {len(value)} bytes, limit {self.max_value_bytes}")
        schema_id = None
        if value[:1] == MAGIC_BYTE:
            if len(value) < FRAME_BYTES:
                return reject(
                    ErrorClass.INVALID_JSON, f"a Schema Registry frame needs {FRAME_BYTES} bytes, got {len(value)}"
                )
            schema_id, value = int.from_bytes(value[1:FRAME_BYTES], "big"), value[FRAME_BYTES:]
            if schema_id > MAX_SCHEMA_ID:
                return reject(ErrorClass.UNKNOWN_SCHEMA, f"schema id {schema_id} is beyond a registry's 32-bit ids")
            if self.schema_known is not None and not self.schema_known(schema_id):
                return reject(ErrorClass.UNKNOWN_SCHEMA, f"schema id {schema_id} is not in the Schema Registry")
        try:
            decoded_text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return reject(ErrorClass.INVALID_UTF8, f"value is not UTF-8: {exc.reason} at byte {exc.start}")
        try:
            payload = json.loads(decoded_text, parse_constant=_reject_constant, parse_float=_finite_float)
        except RecursionError:
            return reject(ErrorClass.INVALID_JSON, "JSON is nested too deeply")
        except ValueError as exc:
            return reject(ErrorClass.INVALID_JSON, f"value is not JSON: {exc}")
        if not isinstance(payload, dict):
            return reject(ErrorClass.NOT_AN_OBJECT, f"expected a JSON object, got {type(payload).__name__}")
        text = payload.get("text")
        if isinstance(text, str) and len(text) > self.max_text_chars:
            return reject(ErrorClass.TEXT_TOO_LONG, f"text has {len(text)} characters, limit {self.max_text_chars}")
        problem = _unstorable(payload)
        if problem:
            return reject(ErrorClass.INVALID_TEXT, problem)
        try:
            event = FeedbackEvent.model_validate(payload)
        except ValidationError as exc:
            return reject(ErrorClass.INVALID_EVENT, _summarise(exc))
        if not event.text.strip():
            return reject(ErrorClass.EMPTY_TEXT, "text is blank")
        offset = event.created_at.utcoffset() if event.created_at else None
        if offset is not None and abs(offset) > MAX_UTC_OFFSET:
            return reject(ErrorClass.INVALID_EVENT, f"created_at: UTC offset {offset} is beyond PostgreSQL's +-15:59")
        return FeedbackItem(
            record=record,
            event_id=event.event_id or derived_event_id(record),
            text=event.text,
            source=event.source,
            product=event.product,
            customer_id=event.customer_id,
            created_at=event.created_at,
            metadata=event.metadata,
            kafka_time=kafka_time(record.timestamp_ms),
            schema_id=schema_id,
            headers=self._passed_through(record),
        )

    def _passed_through(self, record: RawRecord) -> dict[str, str] | None:
        """The headers to copy onto the output messages: named in TRIAGE_PASSTHROUGH_HEADERS, names
        compared without case (the first of a name wins, in the spelling it came with), with a value
        that is printable UTF-8 (which the store and every protocol take; W3C trace context must also
        have its own form). A value that is not is left out, never the event."""
        if not self.passthrough:
            return None
        kept: dict[str, str] = {}
        seen: set[str] = set()
        for name, value in record.headers:
            lowered = name.lower()
            if lowered not in self.passthrough or lowered in seen:
                continue
            seen.add(lowered)
            text = header_text(lowered, value)
            if text is not None:
                kept[name] = text
        return kept or None


MAGIC_BYTE = b"\x00"  # Confluent wire format: magic byte, 4-byte big-endian schema id, payload
FRAME_BYTES = 5
MAX_SCHEMA_ID = 2**31 - 1  # registries hand out positive 32-bit ids; feedback_results.schema_id is an integer
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)


def derived_event_id(record: RawRecord) -> str:
    """The id of an event that brings none: where it was first consumed, and a digest of its bytes.

    A replay of the same record keeps its id: one the broker redelivers sits at the same place, and
    one `deadletters replay` sent back carries its first place in `triage.origin`. A new record at
    the same place (a topic recreated, a cluster failed over and its offsets started again) gets a new
    one instead of passing for a duplicate of the old row and being skipped.
    """
    digest = hashlib.blake2b(digest_size=8)
    digest.update(record.key or b"")
    digest.update(b"\x00")
    digest.update(record.value or b"")
    return f"{origin_of(record) or f'{record.topic}:{record.partition}:{record.offset}'}:{digest.hexdigest()}"


ORIGIN = re.compile(r"[A-Za-z0-9._-]{1,249}:\d{1,10}:\d{1,19}")


def origin_of(record: RawRecord) -> str | None:
    """A replayed record's first place, when it carries a well-formed one."""
    for name, value in record.headers:
        if name == ORIGIN_HEADER and value is not None:
            text = value.decode("ascii", "replace")
            return text if ORIGIN.fullmatch(text) else None
    return None


def kafka_time(timestamp_ms: int | None) -> datetime | None:
    """A record's timestamp as a datetime; None when there is none (-1) or no datetime can hold it."""
    if timestamp_ms is None or timestamp_ms < 0:
        return None
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, timezone.utc)
    except (OverflowError, OSError, ValueError):  # past year 9999
        return None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range (JSONB holds no infinity)")
    return value


def _reject_constant(name: str) -> None:
    """NaN and Infinity are not JSON (RFC 8259); Python accepts them, JSONB does not."""
    raise ValueError(f"{name} is not valid JSON")


def _summarise(exc: ValidationError) -> str:
    """A short, text-free summary of what failed validation (never echoes the input)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _unstorable(payload: dict[str, object]) -> str | None:
    """PostgreSQL text and JSONB cannot hold NUL characters or unpaired UTF-16 surrogates."""
    stack: list[object] = [payload]
    while stack:  # iterative: payloads may be nested as deep as the JSON parser allows
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            if "\x00" in node:
                return "event contains NUL characters, which PostgreSQL cannot store"
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return "event contains unpaired UTF-16 surrogates"
    return None


TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")  # W3C Trace Context, version 00
TRACESTATE_MAX_CHARS = 512


def header_text(name: str, value: bytes | None) -> str | None:
    """A passthrough header's value as text, or None when it is not one to pass on: not UTF-8, a
    control character (PostgreSQL's JSONB takes no NUL), or, for `traceparent` and `tracestate`, not in
    the W3C form."""
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return None
    if name == "traceparent" and not TRACEPARENT.fullmatch(text):
        return None
    if name == "tracestate" and len(text) > TRACESTATE_MAX_CHARS:
        return None
    return text
