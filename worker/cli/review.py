"""Review verbs: what people read and say about the results. `report` (trends), `ack` (escalations
handled, with a verdict), `export` (the verdicts as labelled data), `forget` (a customer's data
erased), `compare` (a shadow candidate beside the served model)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from worker.cli.common import Verbs, database, duration, png
from worker.contracts.errors import ExitStatus, OperatorError
from worker.settings import Settings, format_duration


def register(verbs: Verbs) -> None:
    report = verbs.add_parser("report", help="trend report: share negative by product, source or day")
    report.add_argument("--since", type=duration, default="7d", help="window: 30m, 24h, 7d, 4w ...")
    report.add_argument(
        "--group-by",
        choices=["product", "source", "day", "category"],
        default="product",
        help="what to group the trend by",
    )
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw share negative per day to a PNG")
    report.set_defaults(handler=_report)

    ack = verbs.add_parser("ack", help="mark escalations as handled, optionally with the reviewer's verdict")
    ack.add_argument("event_ids", nargs="+", metavar="EVENT_ID")
    ack.add_argument("--by", default=os.environ.get("USER", "unknown"), help="who handled it (default: $USER)")
    ack.add_argument("--label", choices=["positive", "negative"], help="what the feedback really was")
    ack.add_argument(
        "--category", help="the team's category it belongs to (TRIAGE_CATEGORIES; `general`: none of them)"
    )
    ack.set_defaults(handler=_ack)

    forget = verbs.add_parser("forget", help="erase a customer's text and identifiers from results and the outbox")
    who = forget.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer-id", help="every result of this customer")
    who.add_argument("--event-id", action="append", dest="event_ids", metavar="EVENT_ID", help="repeatable")
    forget.set_defaults(handler=_forget)

    export = verbs.add_parser("export", help="write reviewers' verdicts as labelled JSON lines (for evaluate)")
    # What is exported: the rows with a verdict, the only kind there is. `--reviewed` says so explicitly.
    export.add_argument("--reviewed", action="store_true", help="the rows with a reviewer's verdict (the default)")
    export.add_argument("--since", type=duration, help="only verdicts this recent: 24h, 30d, 4w ... (default: all)")
    export.set_defaults(handler=_export)

    compare = verbs.add_parser("compare", help="the shadow model beside the served one on live traffic and verdicts")
    compare.add_argument("--since", type=duration, default="7d", help="window: 24h, 7d, 4w ...")
    compare.add_argument("--format", choices=["table", "json"], default="table")
    compare.set_defaults(handler=_compare)


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops import trends

    png(args.plot, "--plot")
    with database(settings) as engine:
        rows = trends.trend_rows(engine, args.since, args.group_by)
        if not rows and args.format == "table":
            print(trends.nothing_in(engine, args.since))
        else:
            print(trends.render(rows, args.group_by, args.format))
        if args.plot:
            points = trends.daily_points(engine, args.since, args.group_by)
            if not points:
                raise OperatorError("no feedback in this window, no chart drawn", exit_status=ExitStatus.FAILED)
            chart = trends.plot(points, args.group_by, format_duration(args.since), args.plot)
            print(f"chart written to {chart}", file=sys.stderr)
    return ExitStatus.OK


def _ack(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.acks import acknowledge
    from worker.runtime.wiring import build_categories

    category, defined = None, None
    if args.category is not None:
        defined = build_categories(settings)
        if defined is None:
            raise OperatorError("--category needs TRIAGE_CATEGORIES: the category file the tag is checked against")
        category = defined.check(args.category, "--category")
        if args.label is None:
            raise OperatorError("--category comes with --label: a tag is a verdict on the item, sentiment included")
    with database(settings) as engine:
        outcome = acknowledge(
            engine,
            args.event_ids,
            args.by,
            args.label,
            category,
            categories=defined,
            escalation_topic=settings.escalation_topic,
        )
    for event_id, said in outcome.done:
        print(f"{event_id}: {said}")
    for event_id, said in outcome.refused:
        print(f"{event_id}: {said}", file=sys.stderr)
    return ExitStatus.OK if outcome.ok else ExitStatus.FAILED


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.export import export_reviewed

    with database(settings) as engine:
        exported = export_reviewed(engine, sys.stdout, args.since)
    print(f"exported {exported.written} reviewed results", file=sys.stderr)
    if exported.without_text:
        print(f"left out {exported.without_text} reviewed results stored without text", file=sys.stderr)
    return ExitStatus.OK


def _forget(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.forget import forget

    with database(settings) as engine:
        done = forget(engine, customer_id=args.customer_id, event_ids=args.event_ids or ())
    who = f"customer {args.customer_id}" if args.customer_id else f"{len(args.event_ids)} event ids"
    print(
        f"forgot {who}: text, customer_id and metadata cleared in {done.results} results, "
        f"text, customer_id and metadata in {done.outbox} outbox payloads; "
        "messages already on Kafka topics are not reached"
    )
    return ExitStatus.OK


def _compare(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.learning import compare

    with database(settings) as engine:
        found = compare.comparisons(engine, args.since)
    if args.format == "json":
        print(compare.as_json(found))
    else:
        print(compare.render(found, f"in the last {format_duration(args.since)}"))
    return ExitStatus.OK
