"""The relay and the housekeeping against a real PostgreSQL and broker, under the conditions a review
found: a results topic that cannot be written, a second deployment's rows in the same outbox, a
backlog of 300,000 published rows, a canary with a mis-set retention, a host whose clock runs fast."""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from tests.integration.test_store import result
from tests.services import ESCALATIONS, rows
from worker.contracts.values import ClassifiedItem
from worker.devtools.local_services import LocalBroker, read_topic
from worker.runtime.kafka.publisher import KafkaPublisher
from worker.runtime.postgres.housekeeping import PRUNE_BATCH, prune_outbox
from worker.runtime.postgres.outbox import OutboxTable
from worker.runtime.postgres.partitions import ResultPartitions
from worker.runtime.postgres.store import ResultStore
from worker.runtime.relay import OutboxRelay

pytestmark = pytest.mark.integration


def timed(item: ClassifiedItem, kafka_time: datetime) -> ClassifiedItem:
    return dataclasses.replace(item, item=dataclasses.replace(item.item, kafka_time=kafka_time))


def test_a_results_topic_that_cannot_be_written_blocks_no_escalation(broker: LocalBroker, database_url: str) -> None:
    from kafka import KafkaProducer

    engine = create_engine(database_url)
    topics = {"escalation": ESCALATIONS, "result": "results/unwritable"}  # Kafka refuses the name
    store = ResultStore(engine, publish_results=True, topics=topics)
    produced_at = datetime(2025, 11, 13, tzinfo=timezone.utc)  # the events' Kafka timestamp, as decode reads it
    store.write([timed(result(f"r-{i}", "negative", 0.9), produced_at) for i in range(40)])
    other = ResultStore(engine, topics={"escalation": "other-deployment.escalations"})  # same database
    other.write([result(f"o-{i}", "negative", 0.9) for i in range(5)])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", max_block_ms=2_000)
    delivered: list[tuple[str, float]] = []
    relay = OutboxRelay(
        OutboxTable(engine), KafkaPublisher(producer), topics, on_delivered=lambda kind, s: delivered.append((kind, s))
    )
    started = time.monotonic()
    for _ in range(3):
        relay.publish_all()
    assert time.monotonic() - started < 10
    pending = dict(
        rows(database_url, "select kind, count(*) from escalation_outbox where published_at is null group by 1")
    )
    assert pending == {"result": 40, "escalation": 5}  # ours went out; the results wait; the others' are not ours
    keys = sorted(m.key.decode() for m in read_topic(broker.bootstrap_servers, ESCALATIONS))
    assert keys == sorted(f"r-{i}" for i in range(40))
    # Each acknowledged escalation is timed from its event's Kafka timestamp.
    assert len(delivered) == 40 and {kind for kind, _ in delivered} == {"escalation"}
    now = datetime.now(timezone.utc)
    assert all(abs(seconds - (now - produced_at).total_seconds()) < 60 for _, seconds in delivered)
    producer.close()
    engine.dispose()


def test_housekeeping_deletes_300000_published_rows_in_one_round(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "insert into escalation_outbox (event_id, kind, topic, payload, created_at, published_at, attempts) "
                "select 'h-' || i, 'result', 't', '{}'::jsonb, now() - interval '5 days', now() - interval '4 days', 1 "
                "from generate_series(1, 300000) as i"
            )
        )
        connection.execute(
            text(
                "insert into escalation_outbox (event_id, kind, payload, created_at, attempts) "
                "select 'u-' || i, 'escalation', '{}'::jsonb, now() - interval '5 days', 0 "
                "from generate_series(1, 100) i"
            )
        )
    started = time.perf_counter()
    pruned = prune_outbox(engine, timedelta(days=3), budget_s=120)
    took = time.perf_counter() - started
    print(f"housekeeping: {pruned.deleted} outbox rows in {took:.1f}s ({pruned.deleted / took:,.0f}/s)")
    assert pruned.deleted == 300_000 and pruned.left == 0
    assert rows(database_url, "select count(*) from escalation_outbox") == [(100,)]  # unpublished rows stay
    # With too little time for the round, what is left is reported as the backlog.
    with engine.begin() as connection:
        connection.execute(text("update escalation_outbox set published_at = now() - interval '4 days'"))
        connection.execute(
            text(
                "insert into escalation_outbox (event_id, kind, payload, created_at, published_at, attempts) "
                "select 'b-' || i, 'result', '{}'::jsonb, now(), now() - interval '4 days', 1 "
                "from generate_series(1, 3 * :batch) i"
            ),
            {"batch": PRUNE_BATCH},
        )
    behind = prune_outbox(engine, timedelta(days=3), budget_s=0)
    assert behind.deleted == PRUNE_BATCH and behind.left == 2 * PRUNE_BATCH + 100
    engine.dispose()


def test_a_mis_set_retention_and_a_fast_clock_drop_no_current_week(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(database_url)
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        for days in (28, 21, 14, 7, 0):
            connection.execute(
                text("select feedback_results_ensure_week(cast(:d as date))"), {"d": now - timedelta(days=days)}
            )
    store = ResultStore(engine)
    for days in (21, 14, 7, 0):
        store.write([result(f"w{days}-{i}", "positive", 0.9) for i in range(3)], now=now - timedelta(days=days))
    deployment = ResultPartitions(engine, keep=timedelta(weeks=26))
    assert deployment.drop_expired().partitions == []  # the first worker stores the deployment's retention
    canary = ResultPartitions(engine, keep=timedelta(weeks=1))  # one worker set otherwise
    with caplog.at_level(logging.WARNING):
        assert canary.drop_expired().partitions == []  # it keeps the deployment's 26 weeks
    assert canary.retention() == timedelta(weeks=26)
    assert rows(database_url, "select value from triage_settings where name = 'results_retention'") == [
        (str(26 * 7 * 86_400),)
    ]
    # A host whose clock runs 30 days fast changes nothing: expiry is reckoned by the database's clock
    # (`now()` in SQL); neither module reads the host's.
    import inspect

    import worker.runtime.postgres.housekeeping as housekeeping_module
    import worker.runtime.postgres.partitions as partitions_module

    for module in (partitions_module, housekeeping_module):
        assert "datetime.now" not in inspect.getsource(module) and "time.time" not in inspect.getsource(module)
    with engine.begin() as connection:
        connection.execute(text("update triage_settings set value = :v"), {"v": str(20 * 86_400)})
    ResultPartitions(engine, keep=None).drop_expired()  # the deployment's 20 days, by the database's clock
    kept = rows(
        database_url, "select count(*) from feedback_results where event_id like 'w0-%' or event_id like 'w7-%'"
    )
    assert kept == [(6,)]
    engine.dispose()


def test_a_dead_letter_larger_than_a_request_may_be_goes_without_its_value(broker: LocalBroker) -> None:
    """The real producer refuses the record itself (MESSAGE_TOO_LARGE, errno 10): it is sent again
    without its value instead of being retried forever. (Tansu does not enforce a topic's
    max.message.bytes, so the broker-side refusal is tested with a fake broker in tests/unit.)"""
    from kafka import KafkaProducer

    from tests.services import DEAD_LETTERS
    from worker.contracts.errors import ErrorClass
    from worker.contracts.values import RawRecord, Rejection
    from worker.runtime.kafka.deadletter import DeadLetterSink

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", max_request_size=10_000)
    sink = DeadLetterSink(producer, DEAD_LETTERS)
    big = RawRecord("feedback.events", 1, 77, b"big", b"x" * 50_000)
    sink.send([Rejection(big, ErrorClass.INVALID_JSON, "not JSON")])
    assert sink.flush() == []
    [letter] = read_topic(broker.bootstrap_servers, DEAD_LETTERS)
    headers = {k: v.decode() for k, v in letter.headers}
    assert letter.key == b"big" and letter.value is None
    assert headers["triage.value.omitted_bytes"] == "50000" and headers["triage.source.offset"] == "77"
    producer.close()


def test_the_unpublished_outbox_is_measured_per_kind_and_exported(database_url: str) -> None:
    from worker.runtime.background import RoundReport
    from worker.runtime.batches import StageName
    from worker.runtime.postgres.housekeeping import Housekeeping
    from worker.runtime.service.metrics import Metrics

    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "insert into escalation_outbox (event_id, kind, payload, created_at, published_at, attempts) values "
                "('w-1', 'escalation', '{}', now() - interval '2 minutes', null, 3), "
                "('w-2', 'escalation', '{}', now() - interval '1 minute', null, 1), "
                "('w-3', 'result', '{}', now(), null, 0), "
                "('w-4', 'escalation', '{}', now() - interval '1 hour', now(), 1)"
            )
        )
    housekeeping = Housekeeping(engine, ResultPartitions(engine, None), None)
    housekeeping.watch_outbox()
    escalations, results = housekeeping.unpublished["escalation"], housekeeping.unpublished["result"]
    assert escalations.rows == 2 and 115 < escalations.oldest_s < 600  # the published hour-old row does not count
    assert results.rows == 1 and results.oldest_s < 60
    metrics = Metrics()
    metrics.observe_round(RoundReport(StageName.HOUSEKEEPING, 0.01, unpublished=housekeeping.unpublished))
    value = metrics.registry.get_sample_value
    assert value("triage_outbox_unpublished", {"kind": "escalation"}) == 2
    assert value("triage_outbox_oldest_unpublished_seconds", {"kind": "escalation"}) == escalations.oldest_s
    with engine.begin() as connection:
        connection.execute(text("update escalation_outbox set published_at = now()"))
    housekeeping.watch_outbox()
    assert housekeeping.unpublished == {"escalation": type(escalations)(0, 0.0), "result": type(escalations)(0, 0.0)}
    engine.dispose()


def test_rows_a_broker_with_a_lower_limit_refuses_are_parked_and_the_rest_flow(
    broker: LocalBroker, database_url: str
) -> None:
    """The store cuts what it publishes to TRIAGE_KAFKA_MAX_MESSAGE_BYTES; a broker whose own limit is
    lower refuses the large ones for good. They are parked with the reason, counted by the
    housekeeping's watch, and the small ones behind them are published in the same round."""
    from kafka import KafkaProducer

    from worker.runtime.postgres.housekeeping import Housekeeping

    engine = create_engine(database_url)
    store = ResultStore(engine, topics={"escalation": ESCALATIONS}, max_message_bytes=1_048_576)
    store.write([result(f"big-{i}", "negative", 0.9, text_=f"{i} " + "long " * 40_000) for i in range(3)])
    store.write([result(f"small-{i}", "negative", 0.9) for i in range(5)])
    limited = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", max_request_size=64 * 1024)
    relay = OutboxRelay(OutboxTable(engine), KafkaPublisher(limited), {"escalation": ESCALATIONS})
    assert relay.publish_all() == {"escalation": 5}
    parked = rows(database_url, "select event_id, parked_reason from escalation_outbox where parked_at is not null")
    assert sorted(event_id for event_id, _ in parked) == ["big-0", "big-1", "big-2"]
    assert all("MessageSizeTooLarge" in reason for _, reason in parked)
    assert sorted(m.key.decode() for m in read_topic(broker.bootstrap_servers, ESCALATIONS)) == [
        f"small-{i}" for i in range(5)
    ]
    assert relay.publish_all() == {"escalation": 0}  # parked rows are not tried again
    housekeeping = Housekeeping(engine, ResultPartitions(engine, None), None)
    housekeeping.watch_outbox()
    assert housekeeping.unpublished["escalation"].parked == 3 and housekeeping.unpublished["escalation"].rows == 0
    limited.close()
    engine.dispose()
