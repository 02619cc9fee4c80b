"""Metrics: the worker's Prometheus metrics, fed by one `BatchReport` per committed batch (the loop's
Observer, see ports).

The runner hands each report to `observe`, plus each background loop's rounds (`observe_round`),
the time spent polling and the consumer lag; this module turns them into counters, histograms and
gauges. Stage labels are the `StageName` values used everywhere else. `health` serves them on /metrics. A test checks
that every metric the Grafana dashboard queries is exported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from worker.runtime.background import RoundReport
from worker.runtime.batches import BatchReport, StageName

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
EVENT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TOKEN_BUCKETS = tuple(2**n for n in range(8, 20))  # 256 .. 524,288 padded tokens
MODEL_LABELS = (
    "model",
    "revision",
    "engine",
    "device",
    "dtype",
    "max_length",
    "truncation",
    "calibration",
    "temperature",
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._lag_reported: set[tuple[str, str]] = set()
        r = self.registry
        self.consumed = Counter("triage_events_consumed", "Events read from the input topic and committed", registry=r)
        self.classified = Counter("triage_events_classified", "Events the model classified", registry=r)
        self.stored = Counter("triage_events_stored", "New result rows stored (replays excluded)", registry=r)
        self.escalated = Counter("triage_events_escalated", "Stored results that were escalated", registry=r)
        self.routed = Counter(
            "triage_escalations_routed",
            "Stored escalations by the category they went to (`general`: not routed to a team)",
            ["category"],
            registry=r,
        )
        self.audited = Counter(
            "triage_events_audited",
            "Stored results drawn for the audit sample (sent to reviewers, not escalated)",
            registry=r,
        )
        self.dead_lettered = Counter(
            "triage_events_dead_lettered", "Events sent to the dead-letter topic", ["reason"], registry=r
        )
        self.duplicates = Counter("triage_events_duplicate", "Events whose event_id was already stored", registry=r)
        self.timestamps_dropped = Counter(
            "triage_kafka_timestamps_dropped",
            "Events stored without their Kafka timestamp, which no datetime can hold (e.g. microseconds)",
            registry=r,
        )
        self.published = {  # by outbox kind
            "escalation": Counter(
                "triage_escalations_published", "Escalations published to the escalation topic", registry=r
            ),
            "result": Counter("triage_results_published", "Results published to the results topic", registry=r),
            "reroute": Counter(
                "triage_reroutes_published",
                "Escalations sent again to the team a reviewer tagged them for (ack --category)",
                registry=r,
            ),
        }
        self.batch_events = Histogram(
            "triage_batch_events", "Events per micro-batch", buckets=EVENT_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "triage_batch_padded_tokens", "Padded tokens per micro-batch", buckets=TOKEN_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "triage_queue_wait_seconds",
            "From a batch leaving the batcher to the model starting on it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "triage_stage_seconds",
            "Time one batch spent in each stage (decode, tokenize, infer, store, commit)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_busy = Counter(
            "triage_stage_busy_seconds",
            "Seconds each stage was busy, every stage (poll and relay too); stages overlap",
            ["stage"],
            registry=r,
        )
        self.end_to_end = Histogram(
            "triage_end_to_end_seconds",
            "From the Kafka record timestamp to its offset being committed, per event",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.escalation_delivered = Histogram(
            "triage_escalation_acknowledged_seconds",
            "From the event's Kafka timestamp to the broker acknowledging its escalation, per escalation",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # The gauges say how to add up several worker processes (`run --processes N`, see supervisor):
        # a partition is one process's at a time, pipelines add up, and every process names its model.
        self.lag = Gauge(
            "triage_consumer_lag",
            "Records behind the partition's high watermark",
            ["topic", "partition"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.in_flight = Gauge(
            "triage_pipeline_batches_in_flight",
            "Batches between poll and commit",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.guard_tripped = Gauge(
            "triage_dead_letter_guard_tripped",
            "1 once the dead-letter guard has stopped this worker's consuming (see worker/docs/faults.md)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.outbox_unpublished = Gauge(
            "triage_outbox_unpublished",
            "Outbox rows the broker has not acknowledged yet, by kind (escalation, result)",
            ["kind"],
            registry=r,
            multiprocess_mode="livemax",  # every worker measures the same table
        )
        self.outbox_oldest = Gauge(
            "triage_outbox_oldest_unpublished_seconds",
            "How long the oldest unpublished outbox row of each kind has waited (0: none waits)",
            ["kind"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.outbox_parked = Gauge(
            "triage_outbox_parked",
            "Outbox rows set aside because the broker refuses them for good (too large, invalid), by kind",
            ["kind"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.dead_letters_reduced = Counter(
            "triage_dead_letters_reduced",
            "Dead letters sent in a smaller form to fit the topic (without_value, without_their_headers, "
            "minimal), or dropped when not even that fitted",
            ["form"],
            registry=r,
        )
        # Per process (liveall: labelled with its pid), so the supervisor of `run --processes N` can judge
        # each child's loop and model from the files the children write.
        self.last_poll = Gauge(
            "triage_main_loop_last_poll_timestamp_seconds",
            "When the main loop last polled (Unix time, at most a second old while it turns)",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.model_loaded = Gauge(
            "triage_model_loaded", "1 once the served model is loaded", registry=r, multiprocess_mode="liveall"
        )
        self.shadow_loaded = Gauge(
            "triage_shadow_model_loaded",
            "1 while a TRIAGE_SHADOW_MODEL candidate runs beside the served model; 0 when it is set but could not "
            "be loaded (/readyz says why)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.shadow_failures = Counter(
            "triage_shadow_failures",
            "Batches the shadow candidate failed on (stored without shadow answers; serving went on)",
            registry=r,
        )
        self.housekeeping_backlog = Gauge(
            "triage_housekeeping_backlog",
            "Rows a housekeeping chore could not get through in its last round (0: it keeps pace)",
            ["chore"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model = Gauge(  # an info metric (value 1); prometheus-client's Info has no multiprocess mode
            "triage_model_info",
            "The model being served",
            MODEL_LABELS,
            registry=r,
            multiprocess_mode="liveall",  # one series per process, labelled with its pid
        )

    def describe_model(self, description: Mapping[str, Any]) -> None:
        self.model.labels(*(str(description.get(label, "")) for label in MODEL_LABELS)).set(1)

    def observe(self, report: BatchReport) -> None:
        self.consumed.inc(report.events)
        self.classified.inc(report.classified)
        self.stored.inc(report.stored)
        self.escalated.inc(report.escalated)
        for category, count in report.routed.items():
            self.routed.labels(category).inc(count)
        self.audited.inc(report.audited)
        self.duplicates.inc(len(report.duplicates))
        self.timestamps_dropped.inc(report.timestamps_dropped)
        for rejection in report.dead_letters:
            self.dead_lettered.labels(str(rejection.error_class)).inc()
        self.batch_events.observe(report.events)
        self.batch_tokens.observe(report.padded_tokens)
        self.queue_wait.observe(max(report.queue_wait_s, 0.0))
        for stage, seconds in report.stage_s.items():
            self.stage_seconds.labels(str(stage)).observe(seconds)
            self.stage_busy.labels(str(stage)).inc(seconds)
        for timestamp_ms in report.record_timestamps_ms:
            if 0 <= timestamp_ms <= report.finished_at_ms + 86_400_000:  # not microseconds, not the far future
                self.end_to_end.observe(max(report.finished_at_ms - timestamp_ms, 0.0) / 1000)

    def observe_busy(self, stage: StageName, seconds: float) -> None:
        self.stage_busy.labels(str(stage)).inc(seconds)

    def set_in_flight(self, batches: int) -> None:
        self.in_flight.set(batches)

    def set_guard_tripped(self) -> None:
        self.guard_tripped.set(1)

    def observe_delivery(self, kind: str, seconds: float) -> None:
        """One outbox row acknowledged by the broker, `seconds` after its event's Kafka timestamp."""
        if kind == "escalation":
            self.escalation_delivered.observe(max(seconds, 0.0))

    def observe_round(self, report: RoundReport) -> None:
        """One round of a background loop (relay, housekeeping): its busy time, what it published, its backlog."""
        self.stage_busy.labels(str(report.stage)).inc(report.busy_s)
        for kind, count in report.published.items():
            self.published[kind].inc(count)
        for chore, left in report.backlog.items():
            self.housekeeping_backlog.labels(chore).set(left)
        for kind, waiting in report.unpublished.items():
            self.outbox_unpublished.labels(kind).set(waiting.rows)
            self.outbox_oldest.labels(kind).set(waiting.oldest_s)
            self.outbox_parked.labels(kind).set(waiting.parked)

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        now = {(topic, str(partition)): behind for (topic, partition), behind in lag.items()}
        for gone in self._lag_reported - set(now):  # a partition that moved to another worker
            self.lag.labels(*gone).set(0)  # (zeroed first: another process's files keep values)
        self.lag.clear()  # ... disappears from this process's scrape
        for labels, behind in now.items():
            self.lag.labels(*labels).set(behind)
        self._lag_reported = set(now)

    def exported_names(self) -> set[str]:
        """Every sample name a scrape can contain (e.g. triage_events_stored_total, *_bucket)."""
        return {sample.name for family in self.registry.collect() for sample in family.samples} | {
            family.name + suffix
            for family in self.registry.collect()
            for suffix in {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        }
