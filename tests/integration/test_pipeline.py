"""End to end: N valid and M malformed events through a real worker process, broker and database."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import create_engine, text

from tests.checkpoints import CORPUS
from tests.services import (
    DEAD_LETTERS,
    ESCALATIONS,
    INPUT,
    WorkerProcess,
    committed_offsets,
    next_offsets,
    produce,
    scalar,
    wait_until,
)
from worker.contracts.values import RawRecord
from worker.devtools.local_services import LocalBroker, read_topic
from worker.runtime.decode import derived_event_id

pytestmark = pytest.mark.integration

SECRET = "zebra-confidential"  # in every text; must never reach the logs
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

MALFORMED: list[tuple[bytes, str]] = [
    (b"not json at all", "invalid_json"),
    (b"\xff\xfe\xfd", "invalid_utf8"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'{"event_id": "no-text"}', "invalid_event"),
    (b'{"text": 42}', "invalid_event"),
    (b'{"text": "   "}', "empty_text"),
    (b'{"text": "nul \\u0000 byte"}', "invalid_text"),
    (json.dumps({"text": "x" * 30_000}).encode(), "text_too_long"),
]


def valid_events(n: int) -> list[tuple[bytes | None, bytes]]:
    events = []
    for i in range(n):
        payload = {
            "text": f"{CORPUS[i % len(CORPUS)]} {SECRET} number {i}",
            "source": ["survey", "zendesk", "app-store"][i % 3],
            "product": ["mobile", "web"][i % 2],
            "created_at": f"2026-11-{20 + i % 3}T12:00:00Z",
        }
        if i % 2 == 0:  # the other half get '<topic>:<partition>:<offset>' ids
            payload["event_id"] = f"evt-{i}"
        events.append(((payload.get("event_id") or "").encode() or None, json.dumps(payload).encode()))
    return events


def test_valid_and_malformed_events_end_where_they_belong(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    n, m = 150, len(MALFORMED)
    valid = valid_events(n)
    records = valid[:70] + [(b"bad-key", value) for value, _ in MALFORMED] + valid[70:]
    placed = produce(broker.bootstrap_servers, records)
    expected_ids = set()
    for (key, value), (partition, offset) in zip(records, placed, strict=True):
        if key != b"bad-key":
            expected_ids.add(key.decode() if key else derived_event_id(RawRecord(INPUT, partition, offset, key, value)))
    assert len(expected_ids) == n

    worker = start_worker(TRIAGE_MAX_BATCH_SIZE="16")
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") >= n, 120, "rows stored")
    wait_until(lambda: len(read_topic(broker.bootstrap_servers, DEAD_LETTERS)) >= m, 30, "dead letters")
    wait_until(
        lambda: scalar(database_url, "select count(*) from escalation_outbox where published_at is null") == 0,
        30,
        "outbox relayed",
    )
    assert worker.stop() == 0, worker.logs()[-3000:]

    # Exactly N rows, the right ids, no duplicates.
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = (
            connection.execute(
                text(
                    "select event_id, label, score, escalated, escalation_reason, kafka_partition, kafka_offset, text "
                    "from feedback_results"
                )
            )
            .mappings()
            .all()
        )
    engine.dispose()
    assert len(rows) == n
    assert {r["event_id"] for r in rows} == expected_ids
    assert {r["label"] for r in rows} == {"positive", "negative"}
    for r in rows:
        assert r["escalated"] == (r["label"] == "negative" or r["score"] < 0.60)
        assert r["escalation_reason"] == (
            "negative" if r["label"] == "negative" else "low_confidence" if r["escalated"] else None
        )
        assert SECRET in r["text"]
    escalated = {r["event_id"] for r in rows if r["escalated"]}
    assert 0 < len(escalated) < n

    # M dead letters: original bytes and key, reason and source position in the headers.
    dead = read_topic(broker.bootstrap_servers, DEAD_LETTERS)
    assert len(dead) == m
    by_value = {d.value: d for d in dead}
    for value, error_class in MALFORMED:
        headers = {k: v.decode() for k, v in by_value[value].headers}
        assert headers["triage.error.class"] == error_class
        assert headers["triage.error.message"]
        assert headers["triage.source.topic"] == INPUT
        source = (int(headers["triage.source.partition"]), int(headers["triage.source.offset"]))
        assert source in placed
        assert by_value[value].key == b"bad-key"

    # One escalation message per escalated row, keyed by event_id, valid against the schema.
    messages = read_topic(broker.bootstrap_servers, ESCALATIONS)
    keys = Counter(msg.key.decode() for msg in messages)
    assert set(keys) == escalated and set(keys.values()) == {1}
    schema = json.loads((SCHEMAS / "escalation-event.v3.json").read_text())
    for msg in messages:
        payload = json.loads(msg.value)
        jsonschema.validate(payload, schema)
        assert payload["event_id"] == msg.key.decode()

    # Everything consumed was committed; the customer's text never reached the logs.
    assert committed_offsets(broker.bootstrap_servers) == next_offsets(placed)
    logs = worker.logs()
    assert SECRET not in logs
    events = [json.loads(line)["event"] for line in logs.splitlines() if line.startswith("{")]
    assert {"worker_started", "batch_stored", "event_dead_lettered", "escalations_published", "worker_stopped"} <= set(
        events
    )


def test_replaying_the_same_events_adds_nothing(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    events = valid_events(40)
    with_ids = [e for e in events if e[0]]
    placed = produce(broker.bootstrap_servers, with_ids)
    placed += produce(broker.bootstrap_servers, with_ids)  # the same 20 event ids again, at new offsets
    worker = start_worker()
    wait_until(lambda: committed_offsets(broker.bootstrap_servers) == next_offsets(placed), 90, "all offsets committed")
    assert worker.stop() == 0
    assert scalar(database_url, "select count(*) from feedback_results") == len(with_ids)
    escalated = scalar(database_url, "select count(*) from feedback_results where escalated")
    assert scalar(database_url, "select count(*) from escalation_outbox") == escalated
    assert len(read_topic(broker.bootstrap_servers, ESCALATIONS)) == escalated
    assert "duplicate_events_skipped" in worker.logs()
