"""Fault 10: oversized records. Values over the limit, headers that make a dead letter too large, and
events whose escalation would not fit, mixed with good events: every good event is stored and
escalated once, every bad one dead-lettered in a form that fits, and the worker keeps consuming.

Tansu enforces no message size, so the limit stands in the worker's own producer:
TRIAGE_KAFKA_MAX_MESSAGE_BYTES is its `max_request_size`, and kafka-python refuses a larger record
with MESSAGE_TOO_LARGE, the error a broker gives for its `message.max.bytes`. (A broker whose limit
is lower than the worker's is the relay test in tests/integration/test_housekeeping_and_relay.py.)
"""

from __future__ import annotations

import json
from collections.abc import Callable

from kafka import KafkaProducer

from tests.faults.conftest import FAST_BATCHES
from tests.faults.harness import Expectation, drain_and_stop, verify
from tests.services import ESCALATIONS, INPUT, WorkerProcess, rows, scalar, wait_until
from worker.contracts.values import FeedbackItem, RawRecord
from worker.devtools.local_services import LocalBroker, read_topic
from worker.runtime.decode import Decoder

LIMIT = 64 * 1024
MAX_TEXT = 200_000
SETTINGS = {
    "TRIAGE_KAFKA_MAX_MESSAGE_BYTES": str(LIMIT),
    "TRIAGE_MAX_TEXT_CHARS": str(MAX_TEXT),
    "TRIAGE_PASSTHROUGH_HEADERS": "traceparent",
    "TRIAGE_LOW_CONFIDENCE_THRESHOLD": "1.0",  # every result is escalated (the tiny model's labels are noise)
    **FAST_BATCHES,
}
Headered = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def stream(tag: str, n: int) -> list[Headered]:
    """Good events with the bad ones of each kind between them."""
    records: list[Headered] = []
    for i in range(n):
        text = "awful, the order never came" if i % 2 else "great, thank you"
        records.append((f"{tag}g{i}".encode(), json.dumps({"event_id": f"{tag}g{i}", "text": text}).encode(), []))
        if i % 10 == 3:  # a value over the limit: value_too_large, its dead letter without the value
            big = json.dumps({"event_id": f"{tag}v{i}", "text": "x" * (LIMIT + 10)}).encode()
            records.append((f"{tag}v{i}".encode(), big, []))
        if i % 10 == 5:  # malformed, with its own headers too large for any dead letter that keeps them
            records.append((f"{tag}h{i}".encode(), b"not json", [("x-blob", b"h" * (LIMIT + 1_000))]))
        if i % 10 == 7:  # a negative event whose escalation would not fit: its text is cut, with a header
            text = "terrible and slow, " * ((LIMIT - 400) // 19)
            records.append((f"{tag}c{i}".encode(), json.dumps({"event_id": f"{tag}c{i}", "text": text}).encode(), []))
    return records


def produce(bootstrap: str, records: list[Headered]) -> list[tuple[int, int]]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4 * LIMIT)
    futures = [producer.send(INPUT, key=key, value=value, headers=headers) for key, value, headers in records]
    producer.flush()
    placed = [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
    producer.close()
    return placed


def expected_of(records: list[Headered], placed: list[tuple[int, int]]) -> Expectation:
    decoder = Decoder(max_text_chars=MAX_TEXT, max_value_bytes=LIMIT)
    expectation = Expectation(placed=placed)
    for (partition, offset), (key, value, headers) in sorted(zip(placed, records, strict=True)):
        decoded = decoder.decode(RawRecord(INPUT, partition, offset, key, value, headers=tuple(headers)))
        if isinstance(decoded, FeedbackItem):
            expectation.ids.setdefault(decoded.event_id, value)
        else:
            expectation.dead[(partition, offset)] += 1
    return expectation


def test_oversized_values_headers_and_escalations_are_handled_and_the_worker_keeps_consuming(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess], long_run: bool
) -> None:
    first = stream("a", 300 if long_run else 60)
    placed = produce(broker.bootstrap_servers, first)
    worker = start_worker(**SETTINGS)
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") >= 1, 120, "the first rows")
    # More after the oversized ones: the worker is still consuming, nothing wedged.
    second = stream("b", 20)
    placed += produce(broker.bootstrap_servers, second)
    records = first + second
    expected = expected_of(records, placed)
    drain_and_stop(worker, database_url, expected, 240, "every good event, including those after the oversized")
    report = verify("oversized", broker.bootstrap_servers, database_url, expected, limit_bytes=LIMIT)
    logs = worker.logs()
    assert "dead_letter_retry" not in logs and "Traceback" not in logs
    assert report["escalated_rows"] == report["rows_expected"]
    assert rows(database_url, "select count(*) from escalation_outbox where parked_at is not null") == [(0,)]

    letters = {m.key: m for m in read_topic(broker.bootstrap_servers, "feedback.deadletter")}
    too_large = [m for key, m in letters.items() if key and key[1:2] == b"v"]
    assert too_large and all(
        m.value is None and dict(m.headers)["triage.error.class"] == b"value_too_large" for m in too_large
    )
    headered = [m for key, m in letters.items() if key and key[1:2] == b"h"]
    assert headered and all(
        "x-blob" not in dict(m.headers) and dict(m.headers)["triage.headers.omitted"] == b"1" for m in headered
    )
    assert all(len(m.value or b"") + sum(len(v) for _, v in m.headers) < LIMIT for m in letters.values())

    escalations = {m.key: m for m in read_topic(broker.bootstrap_servers, ESCALATIONS)}
    cut = [m for key, m in escalations.items() if key and key[1:2] == b"c"]
    assert cut and all(len(m.value) < LIMIT and dict(m.headers)["triage.text.cut"] for m in cut)
    assert all(json.loads(m.value)["text"].startswith("terrible and slow") for m in cut)
    assert all(dict(m.headers)["triage.schema"] == b"escalation-event.v3" for m in escalations.values())
    stored_whole = rows(database_url, "select length(text) from feedback_results where event_id like 'ac%' limit 1")
    assert stored_whole[0][0] > LIMIT - 1_000  # the row keeps the whole text; only the message is cut
    assert report["dead_letters_found"] == report["dead_letters_expected"] > 0
