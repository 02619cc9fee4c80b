"""End-to-end mode: worker processes on a real broker and PostgreSQL (embedded), timed from the database.

Events are produced first (a backlog) or at a steady `--rate`; then the time until all are stored
and every escalation is published. Prints events/s, produce-to-stored latency percentiles, the
share of busy time in each stage (read from each worker's own /metrics) and the workers' CPU time
per event (from the OS). With `no_model` the forward pass is replaced by fixed probabilities (see
no_model) and the bare path runs on the same events afterwards, for `ratio_to_bare`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from worker.settings import Settings

STALL_S = 60  # give up when no row is stored or published for this long (includes a group join)
# The poll interval must outlast a CPU batch of long reviews with a real model (about 3 s here);
# Tansu holds every group join for that long, which `events_per_s` leaves out.
POLL_INTERVAL_MS = 15_000


def bench_e2e(
    base: Settings,
    texts: list[str],
    events: int,
    partitions: int,
    rate: float,
    workers: int,
    no_model: bool = False,
    max_poll_interval_ms: int = POLL_INTERVAL_MS,
) -> dict[str, Any]:
    """`workers` worker processes in one group on a real broker and database; see the module doc.

    Throughput is stored events over the span from the first stored row to the last row stored
    or escalation published, so Tansu's group-join wait is left out.
    """
    from kafka import KafkaProducer

    from worker.devtools.local_services import free_port, local_stack

    payloads = [
        json.dumps({"event_id": f"bench-{i}", "text": texts[i % len(texts)], "product": f"p{i % 7}"}).encode()
        for i in range(events)
    ]
    expected = events + (1 if rate else 0)
    # Every text must be stored (the model truncates long ones), so none may trip the text limit.
    base = base.with_overrides(max_text_chars=max(base.max_text_chars, *map(len, texts)))
    with (
        local_stack(base, partitions=partitions, max_poll_interval_ms=max_poll_interval_ms) as (settings, broker),
        tempfile.TemporaryDirectory() as logs,
    ):
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=5)

        def produce() -> None:
            started = time.monotonic()
            for i, payload in enumerate(payloads):
                if rate:
                    time.sleep(max(0.0, started + i / rate - time.monotonic()))
                producer.send(settings.input_topic, key=f"bench-{i}".encode(), value=payload)
            producer.flush()

        if rate:
            # Steady load starts once the group is formed (the warm-up event is stored), so the
            # latency measured is the worker's, not Tansu's group-join wait.
            producer.send(
                settings.input_topic, key=b"warmup", value=json.dumps({"event_id": "warmup", "text": "ok"}).encode()
            )
            producer.flush()
        else:
            produce()  # a backlog: everything is waiting before the workers start
        started = time.perf_counter()
        ports = [free_port() for _ in range(workers)]
        processes = [
            _start_worker(settings, port, Path(logs) / f"worker-{n}.log", no_model) for n, port in enumerate(ports)
        ]
        try:
            _wait_for(settings, lambda rows, _: rows >= 1, processes)
            cpu_at_first_row = _cpu_s(processes)
            if rate:
                produce()
            _wait_for(settings, lambda rows, unpublished: rows >= expected and unpublished == 0, processes)
            elapsed = time.perf_counter() - started
            cpu_s = _cpu_s(processes) - cpu_at_first_row
            busy: dict[str, float] = {}
            for port in ports:  # each worker's own busy-time counters, as Prometheus would read them
                for stage, seconds in _stage_busy(port).items():
                    busy[stage] = busy.get(stage, 0.0) + seconds
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)
            producer.close()
        measured = _measure(settings)
        bare = None
        if no_model:
            from worker.devtools.bench.no_model import bare_path

            bare = bare_path(settings, events)
    total_busy = sum(busy.values()) or 1.0
    return {
        "mode": "e2e",
        "model": settings.model,
        "device": settings.device,
        "workers": workers,
        "events": events,
        "partitions": partitions,
        "rate": rate or "backlog",
        **measured,
        "forward_pass": "replaced by fixed probabilities (half escalated)" if no_model else "the model",
        "worker_cpu_ms_per_event": round(cpu_s * 1000 / max(measured["stored"] - 1, 1), 3),
        **(
            {
                "bare_events_per_s": bare["events_per_s"],
                "bare_cpu_ms_per_event": bare["cpu_ms_per_event"],
                "ratio_to_bare": round(measured["events_per_s"] / bare["events_per_s"], 3),
            }
            if bare
            else {}
        ),
        "wall_s_including_group_join": round(elapsed, 2),
        "stage_busy_s": {k: round(v, 2) for k, v in busy.items()},
        "stage_share": {k: round(v / total_busy, 3) for k, v in busy.items()},
        "max_batch_size": settings.max_batch_size or "device default",
        "pipeline_depth": settings.pipeline_depth,
        "torch_compile": settings.torch_compile,
    }


def _start_worker(settings: Settings, metrics_port: int, log_path: Path, no_model: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")} | settings.as_env()
    env["TRIAGE_METRICS_PORT"] = str(metrics_port)
    command = ["-m", "worker.devtools.bench.no_model"] if no_model else ["-m", "worker", "run"]
    with log_path.open("wb") as log_file:
        return subprocess.Popen([sys.executable, *command], env=env, stdout=log_file, stderr=log_file)


def _cpu_s(processes: list[subprocess.Popen[bytes]]) -> float:
    """User and system CPU seconds the worker processes (and their threads) have used so far."""
    import psutil

    return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in processes)


def _wait_for(settings: Settings, done: Any, processes: list[subprocess.Popen[bytes]]) -> None:
    """Poll the database until `done(rows, unpublished)`; fail if a worker dies or nothing moves for a minute."""
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.sqlalchemy_url())
    last_seen, last_change = None, time.monotonic()
    try:
        while True:
            with engine.connect() as connection:
                rows = connection.execute(text("select count(*) from feedback_results")).scalar_one()
                unpublished = connection.execute(
                    text("select count(*) from escalation_outbox where published_at is null")
                ).scalar_one()
            if done(rows, unpublished):
                return
            if any(process.poll() is not None for process in processes):
                raise RuntimeError("a worker process exited during the benchmark; see its log")
            if (rows, unpublished) != last_seen:
                last_seen, last_change = (rows, unpublished), time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                raise RuntimeError(f"no progress for {STALL_S}s: {rows} rows stored, {unpublished} unpublished")
            time.sleep(0.2)
    finally:
        engine.dispose()


def _stage_busy(metrics_port: int) -> dict[str, float]:
    """`triage_stage_busy_seconds_total` by stage, scraped from a worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        families = text_string_to_metric_families(response.read().decode())
    return {
        sample.labels["stage"]: sample.value
        for family in families
        if family.name == "triage_stage_busy_seconds"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def _measure(settings: Settings) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.sqlalchemy_url())
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "select count(*), min(processed_at), max(processed_at), "
                "percentile_cont(0.5) within group (order by extract(epoch from processed_at - kafka_timestamp)), "
                "percentile_cont(0.99) within group (order by extract(epoch from processed_at - kafka_timestamp)) "
                "from feedback_results where event_id <> 'warmup'"
            )
        ).one()
        last_published, unpublished, published = connection.execute(
            text(
                "select max(published_at), count(*) filter (where published_at is null), "
                "count(*) filter (where published_at is not null) from escalation_outbox"
            )
        ).one()
        escalated = connection.execute(text("select count(*) from feedback_results where escalated")).scalar_one()
    engine.dispose()
    stored, first, last_stored, p50, p99 = row
    last = max(last_stored, last_published or last_stored)
    span = (last - first).total_seconds()
    return {
        "stored": stored,
        "outbox_unpublished": unpublished,
        "escalated": escalated,
        "escalations_published": published,
        "events_per_s": round(stored / span, 1) if span else None,
        "p50_ms": round(float(p50) * 1000, 1),
        "p99_ms": round(float(p99) * 1000, 1),
    }
