"""CLI: the `triage-worker` command and its verbs (run, migrate, classify, send, report, ack, demo, bench, schemas).

Each verb builds the settings once, then hands off to the module that does the work.
Configuration errors exit with status 2 and a message naming the TRIAGE_* variable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from worker.logs import configure_logging, get_logger
from worker.settings import Settings, SettingsError, load_settings

log = get_logger("worker.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triage-worker",
        description="Classify customer feedback from Kafka with a BERT sentiment model; store and triage it.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)

    verbs.add_parser("run", help="consume the input topic and process events until SIGTERM/SIGINT")

    migrate = verbs.add_parser("migrate", help="apply the database migrations (Alembic)")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument("--downgrade", action="store_true", help="downgrade to --revision instead")

    classify = verbs.add_parser("classify", help="classify texts (arguments, or one per line on stdin)")
    classify.add_argument("texts", nargs="*", help="texts to classify; read stdin when none are given")
    classify.add_argument("--model", help="model id or local directory (default: TRIAGE_MODEL)")

    send = verbs.add_parser("send", help="publish feedback events from a JSON-lines file ('-' for stdin)")
    send.add_argument("file", help="JSON-lines file, one event per line")
    send.add_argument("--topic", help="topic (default: TRIAGE_INPUT_TOPIC)")

    report = verbs.add_parser("report", help="trend report: share negative by product, source or day")
    report.add_argument("--since", default="7d", help="window: 24h, 7d, 4w ... (default: 7d)")
    report.add_argument("--by", choices=["product", "source", "day"], default="product")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw share negative per day to a PNG")

    ack = verbs.add_parser("ack", help="mark escalations as handled, so they leave the escalation backlog")
    ack.add_argument("event_ids", nargs="+", metavar="EVENT_ID")
    ack.add_argument("--by", default=os.environ.get("USER", "unknown"), help="who handled it (default: $USER)")

    demo = verbs.add_parser("demo", help="run everything locally on embedded Postgres and Tansu, print results")
    demo.add_argument("--model", help="model id or local directory (default: TRIAGE_MODEL)")

    from worker.bench import add_arguments as bench_arguments

    bench = verbs.add_parser("bench", help="benchmark the classifier (vs transformers pipeline) or the whole worker")
    bench_arguments(bench)

    schemas = verbs.add_parser("schemas", help="write the wire JSON Schemas generated from the models")
    schemas.add_argument("--out", type=Path, default=Path("schemas"), help="folder (default: ./schemas)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"model": args.model} if getattr(args, "model", None) else {}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"triage-worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    handler = {
        "run": _run,
        "migrate": _migrate,
        "classify": _classify,
        "send": _send,
        "demo": _demo,
        "schemas": _schemas,
        "report": _report,
        "ack": _ack,
        "bench": _bench,
    }[args.verb]
    try:
        return handler(settings, args)
    except Exception as exc:  # a clear one-line reason for the operator, the traceback in the log
        from worker.classifier import ModelLoadError

        if isinstance(exc, (ModelLoadError, FileNotFoundError)):
            print(f"triage-worker: {exc}", file=sys.stderr)
            return 2
        raise


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from worker.app import build_worker

    log.info("settings_loaded", settings=settings.safe_dump())
    worker = build_worker(settings)
    worker.install_signal_handlers()
    worker.run()
    return 1 if worker.abandoned else 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from worker import migrate

    if args.downgrade:
        migrate.downgrade(settings.sqlalchemy_url(), args.revision)
    else:
        migrate.upgrade(settings.sqlalchemy_url(), args.revision)
    log.info("migrated", revision=args.revision, downgrade=args.downgrade)
    return 0


def _classify(settings: Settings, args: argparse.Namespace) -> int:
    from worker.classifier import ClassificationFailure, SentimentClassifier

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    classifier = SentimentClassifier(
        settings.model,
        device=settings.device,
        label_map=settings.label_map,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
    )
    for prediction in classifier.predict(texts):
        if isinstance(prediction, ClassificationFailure):
            print(json.dumps([{"error": prediction.message}]))
        else:
            print(json.dumps([{"label": prediction.label.upper(), "score": round(prediction.score, 4)}]))
    return 0


def _send(settings: Settings, args: argparse.Namespace) -> int:
    from worker.publish import publish_lines

    if args.file == "-":
        sent = publish_lines(settings, sys.stdin.buffer, args.topic)
    else:
        path = Path(args.file)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        with path.open("rb") as handle:
            total = sum(1 for _ in handle)
        with path.open("rb") as handle:
            sent = publish_lines(settings, handle, args.topic, total=total)
    print(f"sent {sent} events to {args.topic or settings.input_topic}", file=sys.stderr)
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from worker.demo import run_demo

    return run_demo(settings)


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from worker.bench import run

    return run(args, settings)


def _schemas(settings: Settings, args: argparse.Namespace) -> int:
    from worker.events import write_schemas

    for path in write_schemas(args.out):
        print(path)
    return 0


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import create_engine

    from worker import report

    try:
        since = report.parse_since(args.since)
    except ValueError as exc:
        print(f"triage-worker: {exc}", file=sys.stderr)
        return 2
    if args.plot and args.plot.suffix.lower() != ".png":
        print(f"triage-worker: --plot writes a PNG; name the file *.png, got {args.plot}", file=sys.stderr)
        return 2
    engine = create_engine(settings.sqlalchemy_url())
    try:
        print(report.render(report.trend_rows(engine, since, args.by), args.by, args.format))
        if args.plot:
            points = report.daily_points(engine, since, args.by)
            if not points:
                print("triage-worker: no feedback in this window, no chart drawn", file=sys.stderr)
                return 1
            print(f"chart written to {report.plot(points, args.by, args.since, args.plot)}", file=sys.stderr)
    finally:
        engine.dispose()
    return 0


def _ack(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import create_engine

    from worker.acks import acknowledge

    engine = create_engine(settings.sqlalchemy_url())
    try:
        outcome = acknowledge(engine, args.event_ids, args.by)
    finally:
        engine.dispose()
    for label, ids in (
        ("acknowledged", outcome.acknowledged),
        ("already acknowledged", outcome.already),
        ("not escalated, nothing to acknowledge", outcome.not_escalated),
        ("unknown event id", outcome.unknown),
    ):
        for event_id in ids:
            print(f"{event_id}: {label}", file=sys.stdout if label.startswith(("ack", "already")) else sys.stderr)
    return 0 if outcome.ok else 1
