"""Demo: the whole data path on one machine with no Docker and no system services.

Starts an embedded PostgreSQL and a Tansu broker, migrates, publishes the bundled sample
feedback (including a few malformed events), runs the worker until every event is handled,
and prints the stored results, the escalation messages, the dead letters and `sentiment_daily`.
"""

from __future__ import annotations

import json
import sys
from importlib import resources

from sqlalchemy import text

from worker.devtools.local_services import local_stack, read_topic
from worker.ops.send import send_lines
from worker.runtime.wiring import build_classifier, build_engine, build_runner
from worker.settings import Settings


def sample_lines() -> list[bytes]:
    return (resources.files("worker.devtools") / "sample_feedback.jsonl").read_bytes().splitlines()


def print_table(title: str, rows: list[dict[str, object]]) -> None:
    print(f"\n== {title} ({len(rows)}) ==")
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(_cell(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_cell(row[c]).ljust(widths[c]) for c in columns))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def run_demo(base: Settings) -> int:
    lines = sample_lines()
    print(f"loading the model {base.model} ...", file=sys.stderr, flush=True)
    classifier = build_classifier(base)  # first: a model that cannot be loaded fails before any service starts
    print("starting an embedded PostgreSQL and a Tansu broker ...", file=sys.stderr, flush=True)
    with local_stack(base, partitions=3, max_poll_interval_ms=3000) as (settings, broker):
        print(f"postgres: embedded (socket), broker: tansu at {broker.bootstrap_servers}, model: {settings.model}")
        sent = send_lines(settings, lines, progress=False)
        print(f"published {sent} events to {settings.input_topic}")
        runner = build_runner(settings, classifier)
        totals = runner.run(until=lambda t: t.stored + t.dead_lettered >= sent)  # replays count once
        print(
            f"worker: consumed={totals.consumed} stored={totals.stored} escalated={totals.escalated} "
            f"dead_lettered={totals.dead_lettered} escalations_published={totals.published.get('escalation', 0)}"
        )

        engine = build_engine(settings)
        with engine.connect() as connection:
            results = (
                connection.execute(
                    text(
                        "select event_id, product, source, label, score, escalation_reason as escalated, "
                        "left(text, 48) as text from feedback_results order by event_id"
                    )
                )
                .mappings()
                .all()
            )
            daily = (
                connection.execute(text("select * from sentiment_daily order by day, product, source")).mappings().all()
            )
        engine.dispose()
        print_table("feedback_results", [dict(r) for r in results])
        escalations = [json.loads(r.value) for r in read_topic(broker.bootstrap_servers, settings.escalation_topic)]
        print_table(
            f"escalations on {settings.escalation_topic}",
            [{k: e[k] for k in ("event_id", "reason", "label", "score", "product", "source")} for e in escalations],
        )
        dead = read_topic(broker.bootstrap_servers, settings.dead_letter_topic)
        print_table(
            f"dead letters on {settings.dead_letter_topic}",
            [
                {
                    "offset": dict(r.headers)["triage.source.offset"].decode(),
                    "error_class": dict(r.headers)["triage.error.class"].decode(),
                    "message": dict(r.headers)["triage.error.message"].decode()[:70],
                    "original_bytes": r.value[:40],
                }
                for r in dead
            ],
        )
        print_table("sentiment_daily", [dict(r) for r in daily])
        ok = totals.stored + totals.dead_lettered == sent and len(escalations) == totals.escalated
        print("\ndemo " + ("OK" if ok else "FAILED: counts do not add up"))
        return 0 if ok else 1
