"""Real producers' batches: a librdkafka producer (confluent-kafka, a client we did not write) with each
codec Java and Go producers use, with headers and null keys; every event is stored exactly once, and a
librdkafka consumer reads escalations that validate against schemas/escalation-event.v3.json."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import confluent_kafka
import jsonschema
import pytest

from tests.checkpoints import CORPUS
from tests.services import ESCALATIONS, INPUT, WorkerProcess, scalar, wait_until
from worker.devtools.local_services import LocalBroker, read_topic

pytestmark = pytest.mark.integration
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "escalation-event.v3.json").read_text())


def librdkafka_escalations(bootstrap: str, expected: int, timeout_s: float = 60) -> list[confluent_kafka.Message]:
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "codec-check", "enable.auto.commit": False}
    )
    consumer.assign([confluent_kafka.TopicPartition(ESCALATIONS, 0, confluent_kafka.OFFSET_BEGINNING)])
    messages: list[confluent_kafka.Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    return messages


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_from_librdkafka_are_stored_exactly_once(
    codec: str, broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "compression.type": codec, "linger.ms": 50}
    )
    n = 120
    for i in range(n):
        payload = {"text": f"{CORPUS[i % len(CORPUS)]} ({codec} {i})", "product": "mobile", "metadata": {"n": i}}
        if i % 2:
            payload["event_id"] = f"{codec}-{i}"
        producer.produce(
            INPUT,
            key=f"{codec}-{i}".encode() if i % 2 else None,  # half the records have null keys
            value=json.dumps(payload).encode(),
            headers=[("traceparent", f"00-{i:032x}-{i:016x}-01".encode()), ("origin", b"librdkafka")],
        )
    producer.produce(INPUT, value=b"not json, compressed all the same")
    assert producer.flush(30) == 0
    del producer  # librdkafka's threads go now, not while the broker stops at teardown

    worker = start_worker()
    rows = lambda: scalar(database_url, "select count(*) from feedback_results")  # noqa: E731
    wait_until(lambda: rows() >= n, 120, f"{n} {codec} events stored")
    wait_until(
        lambda: scalar(database_url, "select count(*) from escalation_outbox where published_at is null") == 0,
        60,
        "escalations relayed",
    )
    assert worker.stop() == 0, worker.logs()[-2000:]
    assert rows() == n and scalar(database_url, "select count(distinct event_id) from feedback_results") == n
    assert len(read_topic(broker.bootstrap_servers, "feedback.deadletter")) == 1

    escalated = scalar(database_url, "select count(*) from feedback_results where escalated")
    messages = librdkafka_escalations(broker.bootstrap_servers, escalated)
    assert len(messages) == escalated > 0
    for message in messages:
        event = json.loads(message.value())
        jsonschema.validate(event, SCHEMA, format_checker=jsonschema.FormatChecker())
        assert message.key().decode() == event["event_id"]
        # The producer's metadata and its trace context came through; other headers did not.
        headers = dict(message.headers() or [])
        n = event["metadata"]["n"]
        assert headers == {
            "triage.event_id": event["event_id"].encode(),
            "triage.schema": b"escalation-event.v3",
            "traceparent": f"00-{n:032x}-{n:016x}-01".encode(),
        }


def test_events_framed_by_confluents_json_serializer_are_stored_with_their_schema_id(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A producer team on Schema Registry: librdkafka sends what confluent-kafka's JSONSerializer
    frames (its in-memory registry stands in for a real one, which cannot run here)."""
    from confluent_kafka.serialization import MessageField, SerializationContext

    from tests.unit.test_decode import confluent_json_serializer

    serialize = confluent_json_serializer()
    context = SerializationContext(INPUT, MessageField.VALUE)
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap_servers, "compression.type": "lz4"})
    for i in range(20):
        event = {"event_id": f"framed-{i}", "text": f"{CORPUS[i % len(CORPUS)]} {i}", "metadata": {"order": i}}
        producer.produce(INPUT, key=f"framed-{i}".encode(), value=serialize(event, context))  # type: ignore[operator]
    producer.produce(INPUT, value=serialize({"event_id": "framed-bad", "text": "   "}, context))  # type: ignore[operator]
    assert producer.flush(30) == 0
    del producer

    worker = start_worker()
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") == 20, 120, "framed events stored")
    assert worker.stop() == 0, worker.logs()[-2000:]
    assert (
        scalar(database_url, "select count(distinct schema_id) from feedback_results where schema_id is not null") == 1
    )
    assert scalar(database_url, "select count(*) from feedback_results where metadata ->> 'order' is not null") == 20
    [dead] = read_topic(broker.bootstrap_servers, "feedback.deadletter")
    assert dict(dead.headers)["triage.error.class"] == b"empty_text"  # framed, but still not a valid event
