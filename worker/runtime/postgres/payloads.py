"""Payloads: what the outbox carries for a result (an escalation, a published result, the shadow's
answer), built from the same fields as the result row, and cut to fit the topic's message limit.

A message must fit TRIAGE_KAFKA_MAX_MESSAGE_BYTES (the topics' max.message.bytes), with its key and
headers. An event whose value is at most that limit minus HEADROOM_BYTES escalates whole: what the
worker adds (label, score, reason, model, times; JSONB's spaces) takes less. A larger one keeps its
stored row whole, but its published messages carry the text cut to what fits (and, when its
metadata alone is too large, no metadata), and say so in headers: `triage.text.cut` (the text's
length in characters) and `triage.metadata.dropped`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from worker.contracts.values import ClassifiedItem, Route
from worker.contracts.wire import SCHEMA_HEADER, EscalationEvent, TriageResult, message_bytes

HEADROOM_BYTES = 4096  # what an escalation adds to its event, and what its headers take, at most (tested)
TEXT_CUT = "triage.text.cut"
CATEGORY_HEADER = "triage.category"  # the team's category, or `general` (with categories)
ROUTE_HEADER = "triage.route"  # the category's route, when the item is routed to a team
METADATA_DROPPED = "triage.metadata.dropped"
JSONB_SLACK_BYTES = 256  # JSONB's text may write a number with more digits than Python's repr


def shared_fields(result: ClassifiedItem, include_text: bool) -> dict[str, Any]:
    """The fields a result row, an escalation and a published result all carry, under the same names."""
    item, prediction = result.item, result.prediction
    return {
        "event_id": item.event_id,
        "label": prediction.label,
        "score": prediction.score,
        "model": result.model,
        "model_revision": result.model_revision,
        "source": item.source,
        "product": item.product,
        "customer_id": item.customer_id,
        "created_at": item.created_at,
        "text": item.text if include_text else None,
        "metadata": item.metadata,
    }


def shadow_row(result: ClassifiedItem) -> dict[str, object] | None:
    """The shadow candidate's answer as a `shadow_results` row (without the key columns), or None."""
    shadow = result.shadow
    if shadow is None:
        return None
    return {
        "model": shadow.model,
        "model_revision": shadow.model_revision,
        "calibration": shadow.calibration,
        "label": shadow.prediction.label,
        "score": shadow.prediction.score,
        "negative_prob": shadow.prediction.negative_prob,
        "escalated": shadow.decision.escalate,
        "escalation_reason": shadow.decision.reason,
        **category_columns(shadow.decision.route),
    }


def category_columns(route: Route | None) -> dict[str, object]:
    """The category columns of a result or shadow row (nulls without categories)."""
    return {
        "category": route.category if route else None,
        "category_predicted": route.predicted if route else None,
        "category_score": route.score if route else None,
    }


def category_headers(route: Route | None) -> dict[str, str]:
    """The headers that let a router or a consumer pick a team's messages without parsing them."""
    if route is None:
        return {}
    return {CATEGORY_HEADER: route.category, **({ROUTE_HEADER: route.destination} if route.destination else {})}


def escalation_event(result: ClassifiedItem, escalated_at: datetime, include_text: bool) -> EscalationEvent:
    """The message for the reviewers: an escalation, or an audit-sample item (reason `audit`)."""
    reason = result.decision.reason or ("audit" if result.decision.audit else None)
    assert reason is not None
    route = result.decision.route
    return EscalationEvent(
        **shared_fields(result, include_text),
        reason=reason,
        escalated_at=escalated_at,
        category=route.category if route else None,
        category_score=route.score if route else None,
        category_source=route.source if route else None,
    )


def triage_result(result: ClassifiedItem, processed_at: datetime, include_text: bool) -> dict[str, object]:
    """The `triage-result.v2` payload of a result, as JSON-ready values."""
    return TriageResult(
        **shared_fields(result, include_text),
        negative_prob=result.prediction.negative_prob,
        escalated=result.decision.escalate,
        reason=result.decision.reason,
        processed_at=processed_at,
    ).model_dump(mode="json")


def fitted(
    result: ClassifiedItem, payloads: list[dict[str, Any]], headers: dict[str, str] | None, limit: int
) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """`payloads` (the JSON-ready messages of one result) with the text cut, and if need be the
    metadata dropped, so that each fits `limit` bytes with its key and headers; and the headers with
    what was cut said. Unchanged when everything fits, which is nearly always."""
    said = {**(headers or {}), TEXT_CUT: "0" * 12, METADATA_DROPPED: "true", SCHEMA_HEADER: "x" * 32}
    key = result.item.event_id.encode()
    budget = limit - message_bytes(key, b"", [(k, v.encode()) for k, v in said.items()]) - JSONB_SLACK_BYTES
    if max((_size(p) for p in payloads), default=0) <= budget:
        return payloads, headers
    text = result.item.text
    notes = dict(headers or {})
    if any(_size({**p, "text": ""}) > budget for p in payloads):
        payloads = [{**p, "metadata": None} for p in payloads]
        notes[METADATA_DROPPED] = "true"
    if max(_size(p) for p in payloads) <= budget or all(p.get("text") is None for p in payloads):
        return payloads, notes
    room = budget - max(_size({**p, "text": ""}) for p in payloads) + 2  # the quotes of "" are in the size
    keep = _longest_prefix(text, room)
    notes[TEXT_CUT] = str(len(text))
    return [{**p, "text": text[:keep] if p.get("text") is not None else None} for p in payloads], notes


def _size(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload, ensure_ascii=False).encode())


def _longest_prefix(text: str, room: int) -> int:
    """How many characters of `text` fit `room` bytes as a JSON string (escapes counted)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(text[:middle], ensure_ascii=False).encode()) <= room:
            low = middle
        else:
            high = middle - 1
    return low
