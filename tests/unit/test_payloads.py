"""What the outbox publishes fits the topics' message limit by design: an event up to the limit minus
HEADROOM_BYTES escalates whole; a larger one has its text cut, and says so in a header."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from worker.contracts.values import ClassifiedItem, FeedbackItem, Prediction, RawRecord, TriageDecision
from worker.contracts.wire import EscalationEvent, message_bytes
from worker.runtime.postgres.payloads import (
    HEADROOM_BYTES,
    METADATA_DROPPED,
    TEXT_CUT,
    escalation_event,
    fitted,
    triage_result,
)
from worker.runtime.relay import message_headers

LIMIT = 1_048_576
NOW = datetime(2026, 12, 4, tzinfo=timezone.utc)


def escalated(text: str, metadata: dict[str, object] | None = None, value: bytes = b"{}") -> ClassifiedItem:
    item = FeedbackItem(
        RawRecord("feedback.events", 0, 1, b"e-1", value),
        "e-1" * 80,  # a long id, as an event may bring (up to 256 characters)
        text,
        source="s" * 256,
        product="p" * 256,
        customer_id="c" * 256,
        created_at=NOW,
        metadata=metadata,
        headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "t" * 512},
    )
    return ClassifiedItem(
        item, Prediction("negative", 0.93, 0.93, "NEGATIVE"), TriageDecision(True, "negative"), "m" * 200, 1.0, 1,
        model_revision="dir:0123456789ab",
    )  # fmt: skip


def published(result: ClassifiedItem) -> tuple[list[dict[str, object]], dict[str, str] | None, int]:
    payloads = [
        escalation_event(result, NOW, include_text=True).model_dump(mode="json"),
        triage_result(result, NOW, include_text=True),
    ]
    cut, headers = fitted(result, payloads, result.item.headers, LIMIT)
    largest = max(
        message_bytes(
            result.item.event_id.encode(),
            json.dumps(p, ensure_ascii=False).encode(),
            list(message_headers(result.item.event_id, "result", headers)),
        )
        for p in cut
    )
    return cut, headers, largest


def test_an_event_up_to_the_limit_less_the_headroom_escalates_whole() -> None:
    """The largest event that escalates whole: its value is LIMIT - HEADROOM_BYTES bytes, all of it text
    (the worst case: every other field of the event at its longest)."""
    value_bytes = LIMIT - HEADROOM_BYTES
    text = "é" * ((value_bytes - 2_000) // 2)  # two bytes each in UTF-8; the rest of the value is the fields
    result = escalated(text, value=b"x" * value_bytes)
    cut, headers, largest = published(result)
    assert [p["text"] for p in cut] == [text, text] and TEXT_CUT not in (headers or {})
    assert largest <= LIMIT


def test_a_larger_text_is_cut_to_fit_and_the_header_says_so() -> None:
    text = 'a"\\\n' * 400_000  # 1.6 MB of characters JSON escapes: the cut counts escapes, not characters
    result = escalated(text, metadata={"order": "A-1"})
    cut, headers, largest = published(result)
    assert largest <= LIMIT
    assert headers is not None and headers[TEXT_CUT] == str(len(text)) and METADATA_DROPPED not in headers
    assert all(text.startswith(str(p["text"])) and len(str(p["text"])) > 100_000 for p in cut)
    assert cut[0]["metadata"] == {"order": "A-1"}
    EscalationEvent.model_validate(cut[0])  # still a valid escalation
    assert headers["traceparent"].startswith("00-")  # the input's headers are kept


def test_metadata_too_large_on_its_own_is_dropped_too() -> None:
    result = escalated("short", metadata={"blob": "z" * 2_000_000})
    cut, headers, largest = published(result)
    assert largest <= LIMIT and all(p["metadata"] is None for p in cut)
    assert headers is not None and headers[METADATA_DROPPED] == "true" and TEXT_CUT not in headers
    assert [p["text"] for p in cut] == ["short", "short"]
