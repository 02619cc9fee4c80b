"""The contract suites on the real parts: KafkaSource and DeadLetterSink against Tansu, ResultStore
against PostgreSQL. The same suites hold the in-memory fakes (tests/unit/test_contracts.py)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import create_engine, text

from tests.contracts.dead_letters import LIMIT, DeadLettersContract
from tests.contracts.source import SourceContract
from tests.contracts.writer import WriterContract
from tests.faults.harness import TcpProxy
from tests.services import committed_offsets
from worker.devtools.local_services import LocalBroker, free_port, read_topic
from worker.runtime.kafka.consumer import KafkaSource
from worker.runtime.kafka.deadletter import DeadLetterSink
from worker.runtime.ports import DeadLetters, ResultWriter, Source
from worker.runtime.postgres.store import ResultStore
from worker.runtime.wiring import build_consumer
from worker.settings import Settings

pytestmark = pytest.mark.integration
GROUP_TIMEOUTS = {"kafka_max_poll_interval_ms": 3_000, "kafka_session_timeout_ms": 3_000}  # Tansu holds joins this long


class KafkaSourceHarness:
    timeout_s = 60.0

    def __init__(self, broker: LocalBroker) -> None:
        self.broker = broker
        self.topic = f"contract-{uuid.uuid4().hex[:8]}"
        self.group = f"contract-{uuid.uuid4().hex[:8]}"
        self.settings = Settings(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            group_id=self.group,
            input_topic=self.topic,
            **GROUP_TIMEOUTS,
        )
        self.kafka_source: KafkaSource | None = None
        self._visitor: threading.Thread | None = None
        self._producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")

    def source(self, partitions: dict[int, list[bytes]]) -> Source:
        self.broker.create_topics({self.topic: len(partitions)})
        for partition, values in partitions.items():
            self.add(partition, values)
        self.kafka_source = KafkaSource(build_consumer(self.settings), self.topic)
        return self.kafka_source

    def add(self, partition: int, values: list[bytes]) -> None:
        for value in values:
            self._producer.send(self.topic, value=value, partition=partition)
        self._producer.flush()

    def rebalance(self) -> None:
        """A second member joins the group (the source's partitions are revoked and shared out), takes
        its share, and leaves again (revoked once more, and all assigned back to the source)."""

        def visit() -> None:
            visitor = KafkaConsumer(
                self.topic,
                bootstrap_servers=self.broker.bootstrap_servers,
                group_id=self.group,
                enable_auto_commit=False,
                max_poll_interval_ms=3_000,
                session_timeout_ms=3_000,
                heartbeat_interval_ms=1_000,
            )
            while not visitor.assignment():
                visitor.poll(timeout_ms=200, max_records=1)
            visitor.close(autocommit=False)

        self._visitor = threading.Thread(target=visit, name="second-member")
        self._visitor.start()

    def settled(self) -> bool:
        assert self.kafka_source is not None and self._visitor is not None
        partitions = self.kafka_source.consumer.partitions_for_topic(self.topic) or set()
        everything = {TopicPartition(self.topic, p) for p in partitions}
        return not self._visitor.is_alive() and self.kafka_source.consumer.assignment() == everything

    def committed(self) -> dict[int, int]:
        return {p: o for p, o in committed_offsets(self.broker.bootstrap_servers, self.topic, self.group).items() if o}

    def close(self) -> None:
        self._producer.close()


class StoreHarness:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.engine = create_engine(database_url)

    def writer(self) -> ResultWriter:
        return ResultStore(self.engine)

    def stored(self) -> set[str]:
        with self.engine.connect() as connection:
            return {row[0] for row in connection.execute(text("select event_id from feedback_results"))}

    @contextmanager
    def outage(self) -> Iterator[ResultWriter]:
        """The same store through a port nothing listens on: every connection is refused."""
        unreachable = create_engine(
            self.engine.url.set(host="127.0.0.1", port=free_port(), query={}), connect_args={"connect_timeout": 2}
        )
        try:
            yield ResultStore(unreachable)
        finally:
            unreachable.dispose()


class DeadLetterSinkHarness:
    """The sink over a producer whose requests are capped at LIMIT bytes, standing in for the topic's
    max.message.bytes (Tansu enforces none), through a proxy the test can cut."""

    def __init__(self, broker: LocalBroker, proxy: TcpProxy) -> None:
        self.broker, self.proxy = broker, proxy
        self.name = f"dlq-{uuid.uuid4().hex[:8]}"
        broker.create_topics({self.name: 1})
        self.producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, acks="all", max_request_size=LIMIT, max_block_ms=2_000
        )

    def sink(self) -> DeadLetters:
        return DeadLetterSink(self.producer, self.name, timeout_s=3.0)

    def topic(self) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
        return [(m.key, m.value, dict(m.headers)) for m in read_topic(self.broker.bootstrap_servers, self.name)]

    @contextmanager
    def broker_down(self) -> Iterator[None]:
        self.proxy.cut()
        try:
            yield
        finally:
            self.proxy.restore()

    def close(self) -> None:
        self.producer.close(timeout=2)


class TestKafkaSource(SourceContract):
    @pytest.fixture
    def harness(self, broker: LocalBroker) -> Iterator[KafkaSourceHarness]:
        harness = KafkaSourceHarness(broker)
        yield harness
        harness.close()


class TestResultStore(WriterContract):
    @pytest.fixture
    def harness(self, database_url: str) -> Iterator[StoreHarness]:
        harness = StoreHarness(database_url)
        yield harness
        harness.engine.dispose()


class TestDeadLetterSink(DeadLettersContract):
    @pytest.fixture
    def harness(self, proxied_broker: tuple[LocalBroker, TcpProxy]) -> Iterator[DeadLetterSinkHarness]:
        harness = DeadLetterSinkHarness(*proxied_broker)
        yield harness
        harness.close()
