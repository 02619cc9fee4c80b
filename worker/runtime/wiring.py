"""Wiring: the one place that builds the real parts from settings.

Every verb gets its classifier, database engine, Kafka producer and consumer, and the whole
worker, from here, so no copy of the options can drift. The model package (torch, transformers)
is imported only when a classifier is built, so verbs that need none start quickly.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, KafkaProducer
from sqlalchemy import Engine, create_engine

from worker.logs import get_logger
from worker.runtime.batcher import MicroBatcher
from worker.runtime.deadletter import DeadLetterSink
from worker.runtime.decode import Decoder
from worker.runtime.health import CachedCheck, HealthServer, broker_reachable, database_reachable
from worker.runtime.metrics import Metrics
from worker.runtime.relay import EscalationRelay
from worker.runtime.retry import Backoff
from worker.runtime.runner import Runner
from worker.runtime.shutdown import Shutdown
from worker.runtime.source import KafkaSource
from worker.runtime.stages import DecodeStage, InferStage, StoreStage, TokenizeStage
from worker.runtime.store import ResultStore
from worker.runtime.triage import TriagePolicy
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.model.classifier import SentimentClassifier

log = get_logger("worker.wiring")

PRODUCER_MAX_REQUEST_BYTES = 64 * 1024 * 1024  # dead letters carry whatever the input topic held
PRODUCER_BATCH_BYTES = 256 * 1024  # escalations carry the text (~1.3 kB): 16 kB batches meant a request per dozen


def build_classifier(settings: Settings) -> SentimentClassifier:
    from worker.model.classifier import SentimentClassifier

    return SentimentClassifier(
        settings.model,
        device=settings.device,
        label_map=settings.label_map,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        compile_model=settings.torch_compile,
    )


def build_engine(settings: Settings, *, pool_size: int = 2) -> Engine:
    """A connection pool that checks connections before use and gives up connecting after 5 s."""
    return create_engine(
        settings.sqlalchemy_url(), pool_pre_ping=True, pool_size=pool_size, connect_args={"connect_timeout": 5}
    )


def build_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        acks="all",
        linger_ms=5,
        batch_size=PRODUCER_BATCH_BYTES,
        max_block_ms=5_000,  # a send never stalls a stage for long while the broker is away
        max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        **settings.kafka_common(),
    )


def build_consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.kafka_auto_offset_reset,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(settings.kafka_session_timeout_ms // 3, 100),
        max_partition_fetch_bytes=max(settings.kafka_max_message_bytes, 1_048_576),
        **settings.kafka_common(),
    )


def build_runner(settings: Settings, classifier: SentimentClassifier | None = None) -> Runner:
    """The whole worker. The metrics port opens first, so `/healthz` answers (and `/readyz` says
    the model is not loaded yet) while a large model loads."""
    engine = build_engine(settings)
    metrics = Metrics()
    loaded = threading.Event()
    server = _start_health_server(settings, engine, metrics, loaded)
    classifier = classifier or build_classifier(settings)
    metrics.describe_model(classifier.describe())
    loaded.set()
    producer = build_producer(settings)
    shutdown = Shutdown(settings.shutdown_grace_s)
    backoff = Backoff(max_s=settings.retry_max_backoff_s)

    def close() -> None:
        producer.close(timeout=10)
        engine.dispose()
        if server:
            server.stop()

    dead_letters = DeadLetterSink(producer, settings.dead_letter_topic, max_value_bytes=PRODUCER_MAX_REQUEST_BYTES // 2)
    stages = [
        DecodeStage(Decoder(settings.max_text_chars, settings.kafka_max_message_bytes)),
        TokenizeStage(classifier),
        InferStage(classifier, TriagePolicy(settings.low_confidence_threshold)),
        StoreStage(ResultStore(engine, store_text=settings.store_text), dead_letters, backoff, shutdown.abandoned),
    ]
    return Runner(
        KafkaSource(build_consumer(settings), settings.input_topic),
        stages,
        MicroBatcher(settings.max_batch_size, settings.max_wait_ms),
        depth=settings.pipeline_depth,
        shutdown=shutdown,
        revoke_drain_s=settings.revoke_drain_seconds(),
        metrics=metrics,
        relay=EscalationRelay(engine, producer, settings.escalation_topic, batch_size=settings.relay_batch_size),
        on_close=close,
        started_fields={**classifier.describe(), "topic": settings.input_topic, "group_id": settings.group_id},
    )


def _start_health_server(
    settings: Settings, engine: Engine, metrics: Metrics, loaded: threading.Event
) -> HealthServer | None:
    if settings.metrics_port is None:
        return None
    checks: dict[str, Any] = {
        "database": lambda: database_reachable(engine),
        "broker": lambda: broker_reachable(settings.kafka_common()["bootstrap_servers"]),
        "model": loaded.is_set,
    }
    ready = CachedCheck(lambda: {name: check() for name, check in checks.items()})
    server = HealthServer(settings.metrics_port, metrics, ready).start()
    log.info("metrics_listening", port=server.port, paths=["/metrics", "/healthz", "/readyz"])
    return server
