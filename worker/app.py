"""App: the worker loop. Read this file top to bottom to follow a message through the system.

    poll (source) -> micro-batch (batcher) -> decode -> classify -> triage
      -> dead letters sent (deadletter) + results and outbox rows stored in one transaction (store)
      -> dead letters acknowledged -> offsets committed (source) -> escalations relayed (relay)

Offsets move only after everything before them is stored or dead-lettered, so a crash at any
point replays work instead of losing it, and the idempotent store turns replays into no-ops.
SIGTERM/SIGINT finish the batch in hand, commit, and leave the group; a second signal abandons
the batch without committing (it will be replayed).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from kafka import KafkaProducer
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError

from worker.batcher import MicroBatcher
from worker.classifier import ClassificationFailure, SentimentClassifier
from worker.deadletter import DeadLetterSink
from worker.decode import Decoder
from worker.failpoints import failpoint
from worker.logs import get_logger
from worker.records import ClassifiedItem, FeedbackItem, RawRecord, Rejection
from worker.relay import EscalationRelay
from worker.settings import Settings
from worker.source import KafkaSource, build_consumer
from worker.store import ResultStore, StoreOutcome
from worker.triage import TriagePolicy

log = get_logger("worker.app")

IDLE_POLL_MS = 500
RELAY_INTERVAL_S = 0.25
INITIAL_BACKOFF_S = 0.5
PRODUCER_MAX_REQUEST_BYTES = 64 * 1024 * 1024  # dead letters carry whatever the input topic held


class Abandon(BaseException):
    """Raised by a second stop signal: leave now without committing the batch in hand."""


@dataclass
class Totals:
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    escalated: int = 0
    dead_lettered: int = 0
    relayed: int = 0
    batches: int = 0
    # Wall-clock seconds spent in each stage, for benchmarks and capacity planning.
    stage_s: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("poll", "decode", "tokenize", "inference", "store", "commit", "relay"), 0.0
        )
    )


class Worker:
    def __init__(
        self,
        settings: Settings,
        classifier: SentimentClassifier,
        store: ResultStore,
        dead_letters: DeadLetterSink,
        relay: EscalationRelay,
        source_factory: Callable[[Callable[[], None]], KafkaSource],
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self.store = store
        self.dead_letters = dead_letters
        self.relay = relay
        self.decoder = Decoder(settings.max_text_chars, settings.kafka_max_message_bytes)
        self.policy = TriagePolicy(settings.low_confidence_threshold)
        self.batcher = MicroBatcher(settings.max_batch_size, settings.max_wait_ms)
        self._in_rebalance = False
        self.source = source_factory(self._on_revoke)
        self.on_close = on_close
        self.totals = Totals()
        self.abandoned = False
        self._stopping = False
        self._last_relay = 0.0

    # --- the loop ----------------------------------------------------------------------------
    def run(self, until: Callable[[Totals], bool] | None = None) -> Totals:
        """Consume until a stop signal (or `until(totals)` is true), then drain and leave the group."""
        log.info(
            "worker_started",
            **self.classifier.describe(),
            topic=self.settings.input_topic,
            group_id=self.settings.group_id,
        )
        try:
            while not self._stopping and not (until and until(self.totals)):
                wait_ms = self.batcher.time_left_ms() if self.batcher.pending else IDLE_POLL_MS
                polled_at = time.perf_counter()
                self.batcher.add(self.source.poll(wait_ms, self.batcher.room()))
                self.totals.stage_s["poll"] += time.perf_counter() - polled_at
                failpoint("after_poll")
                if self.batcher.ready():
                    self.process(self.batcher.take())
                self._relay(force=False)
            self._flush_pending()
            self._relay(force=True)
        except Abandon:
            self.abandoned = True
            log.warning("batch_abandoned", events=len(self.batcher.pending))
        finally:
            signal.alarm(0)
            self.source.close()
            self.on_close()
            log.info(
                "worker_stopped",
                **{k: v for k, v in vars(self.totals).items() if k != "stage_s"},
                stage_s={k: round(v, 3) for k, v in self.totals.stage_s.items()},
            )
        return self.totals

    def process(self, records: list[RawRecord]) -> None:
        """Decode, classify, triage, store and dead-letter one batch, then commit its offsets."""
        started = time.perf_counter()
        items: list[FeedbackItem] = []
        rejections: list[Rejection] = []
        for record in records:
            decoded = self.decoder.decode(record)
            (items if isinstance(decoded, FeedbackItem) else rejections).append(decoded)  # type: ignore[arg-type]
        decoded_at = time.perf_counter()

        classified: list[ClassifiedItem] = []
        predictions = self.classifier.predict([item.text for item in items])
        stats = self.classifier.last_stats if items else None
        inference_ms = stats.inference_ms if stats else 0.0
        for item, prediction in zip(items, predictions, strict=True):
            if isinstance(prediction, ClassificationFailure):
                rejections.append(Rejection(item.record, "classification_failed", prediction.message))
                continue
            classified.append(
                ClassifiedItem(
                    item=item,
                    prediction=prediction,
                    decision=self.policy.decide(prediction),
                    model=self.classifier.model_name,
                    inference_ms=inference_ms,
                    batch_size=len(items),
                )
            )

        classified_at = time.perf_counter()
        self.dead_letters.send(rejections)
        outcome = self._store_with_retry(classified)
        stored_at = time.perf_counter()
        failpoint("after_store")
        self._deliver_dead_letters()
        committed = self.source.commit(records)
        committed_at = time.perf_counter()
        failpoint("after_commit")

        for rejection in rejections:
            log.warning(
                "event_dead_lettered",
                error_class=rejection.error_class,
                reason=rejection.message,
                topic=rejection.record.topic,
                partition=rejection.record.partition,
                offset=rejection.record.offset,
            )
        if outcome.duplicates:
            log.warning("duplicate_events_skipped", event_ids=outcome.duplicates[:50], count=len(outcome.duplicates))
        self.totals.consumed += len(records)
        self.totals.stored += outcome.inserted
        self.totals.duplicates += len(outcome.duplicates)
        self.totals.escalated += outcome.escalations
        self.totals.dead_lettered += len(rejections)
        self.totals.batches += 1
        stages = self.totals.stage_s
        stages["decode"] += decoded_at - started
        stages["tokenize"] += (stats.tokenize_ms / 1000) if stats else 0.0
        stages["inference"] += (classified_at - decoded_at) - ((stats.tokenize_ms / 1000) if stats else 0.0)
        stages["store"] += stored_at - classified_at
        stages["commit"] += committed_at - stored_at
        log.info(
            "batch_stored",
            events=len(records),
            stored=outcome.inserted,
            escalated=outcome.escalations,
            dead_lettered=len(rejections),
            duplicates=len(outcome.duplicates),
            tokenize_ms=round(stats.tokenize_ms, 2) if stats else 0.0,
            inference_ms=round(inference_ms, 2),
            padded_tokens=stats.padded_tokens if stats else 0,
            store_ms=round((stored_at - classified_at) * 1000, 2),
            commit_ms=round((committed_at - stored_at) * 1000, 2),
            total_ms=round((time.perf_counter() - started) * 1000, 2),
            committed=committed,
        )

    # --- helpers -----------------------------------------------------------------------------
    def _flush_pending(self) -> None:
        """Process what the batcher holds; called at shutdown and when partitions are revoked."""
        if self.batcher.pending:
            self.process(self.batcher.take())

    def _on_revoke(self) -> None:
        """Runs inside the consumer's poll: store and commit what we hold before partitions move."""
        self._in_rebalance = True
        try:
            self._flush_pending()
        finally:
            self._in_rebalance = False

    def _store_with_retry(self, classified: list[ClassifiedItem]) -> StoreOutcome:
        """Store the batch, waiting out a database outage with backoff for as long as it lasts.

        Nothing of this batch is committed meanwhile, so a crash or an abandon replays it.
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
            self._wait_out_outage(delay)
            delay = min(delay * 2, self.settings.retry_max_backoff_s)

    def _deliver_dead_letters(self) -> None:
        """Wait until every dead letter sent is acknowledged, re-sending what the broker missed."""
        delay = INITIAL_BACKOFF_S
        while undelivered := self.dead_letters.flush():
            log.warning("dead_letter_retry", count=len(undelivered), delay_s=delay)
            self._wait_out_outage(delay)
            self.dead_letters.send(undelivered)
            delay = min(delay * 2, self.settings.retry_max_backoff_s)

    def _wait_out_outage(self, seconds: float) -> None:
        """Sleep `seconds` without leaving the consumer group: partitions paused, polls kept up.

        A rebalance can still happen in these polls; records of newly assigned partitions join
        the batcher and are processed after the batch in hand. Inside a rebalance callback the
        consumer must not be polled, so there it only sleeps.
        """
        if self._in_rebalance:
            time.sleep(seconds)
            return
        self.source.pause_all()
        try:
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                self.batcher.add(self.source.poll(int(min(left, 0.5) * 1000) + 1, self.batcher.room()))
        finally:
            self.source.resume_all()

    def _relay(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_relay < RELAY_INTERVAL_S:
            return
        self._last_relay = now
        try:
            self._relay_rounds(force)
        finally:
            self.totals.stage_s["relay"] += time.monotonic() - now

    def _relay_rounds(self, force: bool) -> None:
        while True:
            try:
                published, failed = self.relay.publish_pending()
            except DBAPIError as exc:
                log.warning("relay_failed", error=type(exc.orig).__name__)
                return
            self.totals.relayed += published
            if published:
                log.info("escalations_published", count=published, failed=failed)
            if failed:
                log.warning("escalations_unpublished", count=failed)
            if not force or published == 0 or failed:
                return

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
    """Wire the real parts together from settings."""
    classifier = classifier or SentimentClassifier(
        settings.model,
        device=settings.device,
        label_map=settings.label_map,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
    )
    engine = create_engine(settings.sqlalchemy_url(), pool_pre_ping=True, pool_size=2)
    producer = KafkaProducer(
        acks="all",
        linger_ms=5,
        max_block_ms=5_000,  # a send never stalls the loop for long while the broker is away
        max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        **settings.kafka_common(),
    )
    return Worker(
        settings=settings,
        classifier=classifier,
        store=ResultStore(engine, store_text=settings.store_text),
        dead_letters=DeadLetterSink(
            producer, settings.dead_letter_topic, max_value_bytes=PRODUCER_MAX_REQUEST_BYTES // 2
        ),
        relay=EscalationRelay(engine, producer, settings.escalation_topic, batch_size=settings.relay_batch_size),
        source_factory=lambda on_revoke: KafkaSource(build_consumer(settings), settings.input_topic, on_revoke),
        on_close=lambda: (producer.close(timeout=10), engine.dispose()),
    )
