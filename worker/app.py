"""App: the worker. Read this file top to bottom to follow a message through the system.

    main thread:   poll (source) -> micro-batch (batcher) -> submit ........ commit offsets (source)
    stage threads:           prepare: decode + tokenize -> infer: classify + triage ->    ^
                             store: dead letters sent, results and outbox rows in one ----'
                                    transaction, dead letters acknowledged
    relay thread:  escalation outbox -> escalation topic (relay)

The stages overlap (see pipeline): while the GPU runs one batch, the next is tokenized and the
previous one stored. Offsets move only after everything before them is stored or dead-lettered,
so a crash at any point replays work instead of losing it, and the idempotent store turns
replays into no-ops. SIGTERM/SIGINT finish the batches in hand, commit, and leave the group;
a second signal abandons them without committing (they will be replayed).
"""

from __future__ import annotations

import math
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from kafka import KafkaProducer
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from worker.batcher import MicroBatcher
from worker.classifier import ClassificationFailure, Encoded, SentimentClassifier
from worker.deadletter import DeadLetterSink
from worker.decode import Decoder
from worker.failpoints import failpoint
from worker.logs import get_logger
from worker.metrics import CachedCheck, HealthServer, Metrics
from worker.pipeline import Pipeline
from worker.records import ClassifiedItem, FeedbackItem, RawRecord, Rejection
from worker.relay import EscalationRelay
from worker.settings import Settings
from worker.source import KafkaSource, build_consumer
from worker.store import ResultStore, StoreOutcome
from worker.triage import TriagePolicy

log = get_logger("worker.app")

IDLE_POLL_MS = 500
PAUSED_WAIT_S = 0.05
RELAY_INTERVAL_S = 0.25
LAG_INTERVAL_S = 5.0
INITIAL_BACKOFF_S = 0.5
PRODUCER_MAX_REQUEST_BYTES = 64 * 1024 * 1024  # dead letters carry whatever the input topic held
PRODUCER_BATCH_BYTES = 256 * 1024  # escalations carry the text (~1.3 kB): 16 kB batches meant a request per dozen
STAGES = ("poll", "decode", "tokenize", "inference", "store", "commit", "relay")


class Abandon(BaseException):
    """Raised by a second stop signal: leave now without committing the batches in hand."""


@dataclass
class Totals:
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    escalated: int = 0
    dead_lettered: int = 0
    relayed: int = 0
    batches: int = 0
    # Seconds each stage was busy, for benchmarks and capacity planning. Stages run in parallel,
    # so these add up to more than the wall-clock time.
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


@dataclass
class Batch:
    """One micro-batch on its way through the stages; each stage fills in its part."""

    records: list[RawRecord]
    submitted_at: float = field(default_factory=time.perf_counter)
    queue_wait_s: float | None = None  # from leaving the batcher to the model starting on it
    items: list[FeedbackItem] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    encoded: Encoded | None = None
    classified: list[ClassifiedItem] = field(default_factory=list)
    outcome: StoreOutcome = field(default_factory=lambda: StoreOutcome(0, 0, []))
    stage_s: dict[str, float] = field(default_factory=dict)
    padded_tokens: int = 0


class Worker:
    def __init__(
        self,
        settings: Settings,
        classifier: SentimentClassifier,
        store: ResultStore,
        dead_letters: DeadLetterSink,
        relay: EscalationRelay,
        source_factory: Callable[[Callable[[], list[RawRecord]]], KafkaSource],
        on_close: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self.store = store
        self.dead_letters = dead_letters
        self.relay = relay
        self.decoder = Decoder(settings.max_text_chars, settings.kafka_max_message_bytes)
        self.policy = TriagePolicy(settings.low_confidence_threshold)
        self.batcher = MicroBatcher(settings.max_batch_size, settings.max_wait_ms)
        self.source = source_factory(self._on_revoke)
        self.on_close = on_close
        self.metrics = metrics or Metrics()
        self.metrics.describe_model(classifier.describe())
        self._lag_at = 0.0
        self.totals = Totals()
        self.abandoned = False
        self._stopping = False
        self._relay_stop = threading.Event()
        self._loop_ended = False

    # --- the main thread ---------------------------------------------------------------------
    def run(self, until: Callable[[Totals], bool] | None = None) -> Totals:
        """Consume until a stop signal (or `until(totals)` is true), then drain and leave the group."""
        log.info(
            "worker_started",
            **self.classifier.describe(),
            topic=self.settings.input_topic,
            group_id=self.settings.group_id,
            pipeline_depth=self.settings.pipeline_depth,
        )
        self.pipeline: Pipeline[Batch] = Pipeline(
            [("prepare", self.prepare), ("infer", self.infer), ("store", self.store_batch)],
            depth=self.settings.pipeline_depth,
        )
        relay_thread = threading.Thread(target=self._relay_loop, name="relay", daemon=True)
        relay_thread.start()
        try:
            while not self._stopping and not (until and until(self.totals)):
                self._commit_finished(wait_s=0)
                if self.pipeline.full():
                    self._wait_for_room()
                    continue
                wait_ms = self.batcher.time_left_ms() if self.batcher.pending else IDLE_POLL_MS
                polled_at = time.perf_counter()
                self.batcher.add(self.source.poll(wait_ms, self.batcher.room()))
                self.totals.stage_s["poll"] += time.perf_counter() - polled_at
                failpoint("after_poll")
                if self.batcher.ready():
                    self.pipeline.submit(Batch(self.batcher.take()))
                self._report_progress()
            for batch in self._drain():
                self._commit_finished_batch(batch)
            self._loop_ended = True
            self.pipeline.close()
            self._relay_stop.set()
            relay_thread.join()
        except Abandon:
            self._loop_ended = True
            self.abandoned = True
            log.warning("batch_abandoned", events=len(self.batcher.pending), batches_in_flight=self.pipeline.in_flight)
        finally:
            signal.alarm(0)
            self._relay_stop.set()
            self.source.close()
            self.on_close()
            log.info(
                "worker_stopped",
                **{k: v for k, v in vars(self.totals).items() if k != "stage_s"},
                stage_s={k: round(v, 3) for k, v in self.totals.stage_s.items()},
            )
        return self.totals

    def _report_progress(self) -> None:
        """Pipeline occupancy now, and consumer lag every LAG_INTERVAL_S (from fetch metadata, no request)."""
        self.metrics.in_flight.set(self.pipeline.in_flight)
        if time.monotonic() - self._lag_at >= LAG_INTERVAL_S:
            self._lag_at = time.monotonic()
            self.metrics.set_lag(self.source.lag())

    def _wait_for_room(self) -> None:
        """Every slot is taken (a slow stage or an outage): stop fetching, keep the group, wait.

        Partitions stay paused until a batch comes out; polls continue so the consumer keeps its
        membership (and may see a rebalance, whose callback drains the pipeline).
        """
        self.source.pause_all()
        try:
            while self.pipeline.full() and not self._stopping:
                self.source.poll(0, 1)  # nothing is fetched while paused
                self._commit_finished(wait_s=PAUSED_WAIT_S)
        finally:
            self.source.resume_all()

    def _drain(self) -> list[Batch]:
        """Push out the batch being gathered and wait until every batch in flight is finished."""
        if self.batcher.pending:
            self.pipeline.submit(Batch(self.batcher.take()))
        drained: list[Batch] = []
        while self.pipeline.in_flight:
            drained += self.pipeline.finished(PAUSED_WAIT_S)
        return drained

    def _on_revoke(self) -> list[RawRecord]:
        """Before partitions move: finish every batch in hand; the source commits their offsets.

        Runs on the consumer's network thread while the main thread waits inside `poll`. After
        the loop has ended (a clean stop drained everything; an abandon must commit nothing) it
        hands back nothing.
        """
        if self._loop_ended:
            return []
        records: list[RawRecord] = []
        for batch in self._drain():
            self.account(batch, committed="on_revoke")
            records += batch.records
        return records

    def _commit_finished(self, wait_s: float) -> None:
        for batch in self.pipeline.finished(wait_s):
            self._commit_finished_batch(batch)

    def _commit_finished_batch(self, batch: Batch) -> None:
        started = time.perf_counter()
        committed = self.source.commit(batch.records)
        batch.stage_s["commit"] = time.perf_counter() - started
        failpoint("after_commit")
        self.account(batch, committed)

    # --- the stages (each runs in its own thread, one batch at a time, in order) -------------
    def prepare(self, batch: Batch) -> Batch:
        """Decode the records and tokenize the valid ones."""
        started = time.perf_counter()
        for record in batch.records:
            decoded = self.decoder.decode(record)
            (batch.items if isinstance(decoded, FeedbackItem) else batch.rejections).append(decoded)  # type: ignore[arg-type]
        decoded_at = time.perf_counter()
        batch.encoded = self.classifier.encode([item.text for item in batch.items])
        batch.stage_s["decode"] = decoded_at - started
        batch.stage_s["tokenize"] = time.perf_counter() - decoded_at
        return batch

    def infer(self, batch: Batch) -> Batch:
        """Classify and triage; a text the model cannot take becomes a dead letter."""
        assert batch.encoded is not None
        started = time.perf_counter()
        batch.queue_wait_s = (
            started - batch.submitted_at - batch.stage_s.get("decode", 0.0) - batch.stage_s.get("tokenize", 0.0)
        )
        predictions = self.classifier.classify(batch.encoded)
        stats = self.classifier.last_stats
        inference_ms = stats.inference_ms if stats else 0.0
        batch.padded_tokens = stats.padded_tokens if stats else 0
        batch.encoded = None  # the tensors are no longer needed
        for item, prediction in zip(batch.items, predictions, strict=True):
            if isinstance(prediction, ClassificationFailure):
                batch.rejections.append(Rejection(item.record, "classification_failed", prediction.message))
                continue
            batch.classified.append(
                ClassifiedItem(
                    item=item,
                    prediction=prediction,
                    decision=self.policy.decide(prediction),
                    model=self.classifier.model_name,
                    inference_ms=inference_ms,
                    batch_size=len(batch.items),
                )
            )
        batch.stage_s["inference"] = time.perf_counter() - started
        return batch

    def store_batch(self, batch: Batch) -> Batch:
        """Send dead letters, store results and outbox rows in one transaction, await the dead letters."""
        started = time.perf_counter()
        self.dead_letters.send(batch.rejections)
        batch.outcome = self._store_with_retry(batch.classified)
        failpoint("after_store")
        self._deliver_dead_letters()
        batch.stage_s["store"] = time.perf_counter() - started
        return batch

    # --- back on the main thread -------------------------------------------------------------
    def account(self, batch: Batch, committed: object) -> None:
        """Count and log a batch whose offsets were just committed."""
        for rejection in batch.rejections:
            log.warning(
                "event_dead_lettered",
                error_class=rejection.error_class,
                reason=rejection.message,
                topic=rejection.record.topic,
                partition=rejection.record.partition,
                offset=rejection.record.offset,
            )
        outcome = batch.outcome
        if outcome.duplicates:
            log.warning("duplicate_events_skipped", event_ids=outcome.duplicates[:50], count=len(outcome.duplicates))
        self.totals.consumed += len(batch.records)
        self.totals.stored += outcome.inserted
        self.totals.duplicates += len(outcome.duplicates)
        self.totals.escalated += outcome.escalations
        self.totals.dead_lettered += len(batch.rejections)
        self.totals.batches += 1
        for stage, seconds in batch.stage_s.items():
            self.totals.stage_s[stage] += seconds
        self.metrics.observe_batch(batch, committed_at_ms=time.time() * 1000)
        log.info(
            "batch_stored",
            events=len(batch.records),
            stored=outcome.inserted,
            escalated=outcome.escalations,
            dead_lettered=len(batch.rejections),
            duplicates=len(outcome.duplicates),
            padded_tokens=batch.padded_tokens,
            **{f"{stage}_ms": round(seconds * 1000, 2) for stage, seconds in batch.stage_s.items()},
            committed=committed,
        )

    # --- waiting out outages (store thread) --------------------------------------------------
    def _store_with_retry(self, classified: list[ClassifiedItem]) -> StoreOutcome:
        """Store the batch, waiting out a database outage with backoff for as long as it lasts.

        Nothing of this batch is committed meanwhile (the main thread keeps polling with its
        partitions paused once the pipeline is full), so a crash or an abandon replays it.
        Errors that are not about the connection (a bad schema, a constraint) are raised.
        """
        delay = INITIAL_BACKOFF_S
        while True:
            try:
                return self.store.write(classified)
            except DBAPIError as exc:
                if not _is_transient(exc):
                    raise
                log.warning("store_retry", delay_s=delay, error=type(exc.orig).__name__)
            time.sleep(delay)
            delay = min(delay * 2, self.settings.retry_max_backoff_s)

    def _deliver_dead_letters(self) -> None:
        """Wait until every dead letter sent is acknowledged, re-sending what the broker missed."""
        delay = INITIAL_BACKOFF_S
        while undelivered := self.dead_letters.flush():
            log.warning("dead_letter_retry", count=len(undelivered), delay_s=delay)
            time.sleep(delay)
            self.dead_letters.send(undelivered)
            delay = min(delay * 2, self.settings.retry_max_backoff_s)

    # --- the relay thread --------------------------------------------------------------------
    def _relay_loop(self) -> None:
        """Publish outbox rows until none is pending, then look again after RELAY_INTERVAL_S.

        At a clean stop it publishes what is left; an abandoned worker leaves that to the next one.
        """
        while not self._relay_stop.wait(RELAY_INTERVAL_S):
            self._relay()
        if not self.abandoned:
            self._relay()

    def _relay(self) -> None:
        started = time.monotonic()
        try:
            while True:
                published, failed = self.relay.publish_pending()
                self.totals.relayed += published
                self.metrics.published.inc(published)
                if published:
                    log.info("escalations_published", count=published, failed=failed)
                if failed:
                    log.warning("escalations_unpublished", count=failed)
                if published == 0 or failed:
                    return
        except DBAPIError as exc:
            log.warning("relay_failed", error=type(exc.orig).__name__)
        except Exception as exc:  # noqa: BLE001 - the outbox keeps the rows; try again next round
            log.error("relay_failed", error=f"{type(exc).__name__}: {exc}"[:500])
        finally:
            self.totals.stage_s["relay"] += time.monotonic() - started

    # --- signals -----------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            raise Abandon()
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        self._stopping = True
        signal.alarm(max(1, math.ceil(self.settings.shutdown_grace_s)))  # SIGALRM ends a drain that hangs
        signal.signal(signal.SIGALRM, lambda *_: self._on_signal(signal.SIGTERM, None))


def _is_transient(exc: DBAPIError) -> bool:
    """Connection-level failures are worth retrying; constraint or SQL errors are not."""
    return bool(exc.connection_invalidated) or type(exc.orig).__name__ in {"OperationalError", "InterfaceError"}


def build_worker(settings: Settings, classifier: SentimentClassifier | None = None) -> Worker:
    """Wire the real parts together from settings.

    The metrics port opens first, so `/healthz` answers (and `/readyz` says the model is not
    loaded yet) while a large model loads.
    """
    engine = create_engine(
        settings.sqlalchemy_url(), pool_pre_ping=True, pool_size=2, connect_args={"connect_timeout": 5}
    )
    metrics = Metrics()
    loaded = threading.Event()
    server = None
    if settings.metrics_port is not None:
        ready = CachedCheck(
            lambda: {
                "database": _database_reachable(engine),
                "broker": _broker_reachable(settings.kafka_common()["bootstrap_servers"]),
                "model": loaded.is_set(),
            }
        )
        server = HealthServer(settings.metrics_port, metrics, ready).start()
        log.info("metrics_listening", port=server.port, paths=["/metrics", "/healthz", "/readyz"])
    classifier = classifier or SentimentClassifier(
        settings.model,
        device=settings.device,
        label_map=settings.label_map,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        compile_model=settings.torch_compile,
    )
    loaded.set()
    producer = KafkaProducer(
        acks="all",
        linger_ms=5,
        batch_size=PRODUCER_BATCH_BYTES,
        max_block_ms=5_000,  # a send never stalls the loop for long while the broker is away
        max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        **settings.kafka_common(),
    )

    def close() -> None:
        producer.close(timeout=10)
        engine.dispose()
        if server:
            server.stop()

    return Worker(
        settings=settings,
        classifier=classifier,
        store=ResultStore(engine, store_text=settings.store_text),
        dead_letters=DeadLetterSink(
            producer, settings.dead_letter_topic, max_value_bytes=PRODUCER_MAX_REQUEST_BYTES // 2
        ),
        relay=EscalationRelay(engine, producer, settings.escalation_topic, batch_size=settings.relay_batch_size),
        source_factory=lambda on_revoke: KafkaSource(build_consumer(settings), settings.input_topic, on_revoke),
        on_close=close,
        metrics=metrics,
    )


def _database_reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        return True
    except DBAPIError:
        return False


def _broker_reachable(bootstrap_servers: list[str], timeout_s: float = 2.0) -> bool:
    """True when a TCP connection to any bootstrap server opens (TLS and SASL come after)."""
    for server in bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False
