"""Fault 12: poison values and database conditions that once stopped the worker on its first batch.

- a poison stream: values PostgreSQL refuses, between valid events, in one run. Some decode now
  refuses with a clear reason (an infinite number, a UTC offset beyond +-15:59); one passes decode
  and only the database refuses it (a CHECK a DBA added), which the store isolates; a record whose
  Kafka timestamp is in microseconds keeps its event, stored without the timestamp.
- a read-only failover, then a statement timeout, mid-stream: both are outages, waited out.
- a header key that is not UTF-8 (librdkafka allows it; kafka-python cannot parse the batch): the
  worker stops with one line and exit 3, as for any unreadable batch, and skips nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaProducer
from sqlalchemy import create_engine, make_url, text

from tests.faults.conftest import FAST_BATCHES
from tests.faults.harness import Expectation, drain_and_stop, make_stream, verify
from tests.faults.test_outages import alter_database, hold_outage
from tests.services import (
    DEAD_LETTERS,
    INPUT,
    WorkerProcess,
    committed_offsets,
    produce,
    rows,
    scalar,
    wait_until,
)
from worker.devtools.local_services import LocalBroker, read_topic

REFUSED_PRODUCT = "refused-by-db"
POISON = [
    (b"p-inf", b'{"event_id": "p-inf", "text": "fine", "metadata": {"x": 1e400}}'),  # inf; jsonb refuses it
    (b"p-tz", b'{"event_id": "p-tz", "text": "fine", "created_at": "2026-11-25T10:00:00+20:00"}'),
    (b"p-db", json.dumps({"event_id": "p-db", "text": "fine", "product": REFUSED_PRODUCT}).encode()),
]


def test_a_poison_stream_is_stored_or_dead_lettered_and_the_worker_stays_up(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess], long_run: bool
) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:  # a rule decode cannot know: only the database refuses it
        connection.execute(
            text(f"alter table feedback_results add constraint no_refused check (product <> '{REFUSED_PRODUCT}')")
        )
    engine.dispose()
    valid = make_stream(3_000 if long_run else 600, 6)
    third = len(valid) // 3
    stream = valid[:third] + POISON[:1] + valid[third : 2 * third] + POISON[1:] + valid[2 * third :]
    placed = produce(broker.bootstrap_servers, stream)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    microseconds = (b"p-us", json.dumps({"event_id": "p-us", "text": "fine, timestamped in microseconds"}).encode())
    sent = producer.send(INPUT, key=microseconds[0], value=microseconds[1], timestamp_ms=1_764_000_000_000_000)
    placed.append((lambda m: (m.partition, m.offset))(sent.get(timeout=30)))
    producer.close()
    stream.append(microseconds)
    expected = Expectation.of(stream, placed)
    refused_at = placed[stream.index(POISON[2])]
    assert expected.ids.pop("p-db")  # decode takes it; the database refuses it
    expected.dead[refused_at] += 1

    worker = start_worker(**FAST_BATCHES)
    drain_and_stop(worker, database_url, expected, 240, "every valid event stored")
    report = verify("poison_stream", broker.bootstrap_servers, database_url, expected, poison=len(POISON) + 1)
    logs = worker.logs()
    assert "Traceback" not in logs and "terminate called" not in logs
    assert rows(database_url, "select kafka_timestamp from feedback_results where event_id = 'p-us'") == [(None,)]
    letters = {m.key: {k: v.decode() for k, v in m.headers} for m in read_topic(broker.bootstrap_servers, DEAD_LETTERS)}
    assert letters[b"p-db"]["triage.error.class"] == "store_rejected"
    assert letters[b"p-db"]["triage.error.sqlstate"] == "23514"
    assert letters[b"p-inf"]["triage.error.class"] == "invalid_json"
    assert letters[b"p-tz"]["triage.error.class"] == "invalid_event"
    assert '"timestamps_dropped": 1' in logs
    assert report["rows_duplicated"] == 0


def test_a_read_only_failover_then_a_statement_timeout_are_waited_out(
    broker: LocalBroker,
    database_url: str,
    postgres_server_url: str,
    start_worker: Callable[..., WorkerProcess],
    long_run: bool,
) -> None:
    n, outage_s = (10_000, 30) if long_run else (2_400, 0)
    stream = make_stream(n, 20)
    placed = produce(broker.bootstrap_servers, stream)
    expected = Expectation.of(stream, placed)
    stored = lambda: scalar(database_url, "select count(*) from feedback_results")  # noqa: E731
    committed = lambda: sum(v or 0 for v in committed_offsets(broker.bootstrap_servers).values())  # noqa: E731

    worker = start_worker(TRIAGE_RETRY_MAX_BACKOFF_S="1", **FAST_BATCHES)
    held: list[float] = []
    for setting, at in (("default_transaction_read_only = on", n // 8), ("statement_timeout = '1ms'", n // 2)):
        wait_until(lambda at=at: stored() >= at, 180, f"progress before {setting}")
        alter_database(postgres_server_url, database_url, f"set {setting}")
        try:
            held.append(hold_outage(worker, committed, setting, long_s=outage_s))
        finally:
            alter_database(postgres_server_url, database_url, "reset all")
    drain_and_stop(worker, database_url, expected, 300, "catching up after both")
    logs = worker.logs()
    assert "25006" in logs and "57014" in logs  # store_retry names the SQLSTATE it waited out
    assert "Traceback" not in logs and "terminate called" not in logs
    verify("read_only_then_statement_timeout", broker.bootstrap_servers, database_url, expected, outage_s=held)


class RawHeaderKey(str):
    """A header key whose bytes on the wire are not UTF-8, as the Kafka protocol and librdkafka's C API
    allow (confluent-kafka's Python binding turns a bytes key into its repr, so it cannot make one)."""

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return b"\xff\xfeodd"


def test_a_header_key_that_is_not_utf8_stops_the_worker_with_one_line(
    broker: LocalBroker, database_url: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """kafka-python raises CorruptRecordError for the batch (after the records before it), so this is an
    unreadable batch like any other: exit 3, one line, nothing skipped."""
    placed = produce(broker.bootstrap_servers, make_stream(90, 0, tag="h"))
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    odd = producer.send(
        INPUT,
        key=b"odd-header",
        value=b'{"event_id": "odd-header", "text": "fine"}',
        headers=[(RawHeaderKey("odd"), b"v")],
    ).get(timeout=30)
    producer.close()
    worker = WorkerProcess({**worker_env, "TRIAGE_MAX_BATCH_SIZE": "16"}, tmp_path / "worker.log")
    try:
        code = worker.process.wait(120)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        raise AssertionError(worker.logs()[-4000:]) from None
    logs = worker.logs()
    assert code == 3, logs[-3000:]
    last = logs.splitlines()[-1]
    assert last.startswith("triage-worker: unreadable record batch at") and "UnicodeDecodeError" in last, last
    assert "Traceback" not in logs
    assert (committed_offsets(broker.bootstrap_servers)[odd.partition] or 0) <= odd.offset  # nothing skipped
    assert scalar(database_url, "select count(*) from feedback_results where event_id = 'odd-header'") == 0
    assert len(placed) == 90


def test_a_privilege_problem_stops_the_worker_with_one_line(
    broker: LocalBroker, database_url: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """A role that may read but not write: no retry can fix that, so the worker stops, exit 2, one line."""
    role = f"reader_{make_url(database_url).database[-8:]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"create role {role} login"))
        connection.execute(text(f"grant select on all tables in schema public to {role}"))
    try:
        placed = produce(broker.bootstrap_servers, make_stream(20, 0, tag="r"))
        url = make_url(database_url).set(username=role).render_as_string(hide_password=False)
        worker = WorkerProcess({**worker_env, "TRIAGE_DATABASE_URL": url}, tmp_path / "worker.log")
        code = worker.process.wait(120)
        logs = worker.logs()
        assert code == 2, logs[-3000:]
        assert logs.splitlines()[-1].startswith(
            "triage-worker: the database refused the worker's statement: SQLSTATE 42501"
        )
        assert "Traceback" not in logs and "terminate called" not in logs
        assert all(offset is None for offset in committed_offsets(broker.bootstrap_servers).values()), placed
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"revoke all on all tables in schema public from {role}"))
            connection.execute(text(f"drop role {role}"))
        admin.dispose()
