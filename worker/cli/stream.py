"""Stream verbs: `send` (events onto the input topic) and `deadletters` (what the dead-letter topic
holds, and fixed dead letters back onto their topic)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worker.cli.common import Verbs, duration
from worker.contracts.errors import ExitStatus, OperatorError
from worker.settings import Settings, format_duration


def register(verbs: Verbs) -> None:
    send = verbs.add_parser("send", help="publish feedback events from a JSON-lines file ('-' for stdin)")
    send.add_argument("file", help="JSON-lines file, one event per line")
    send.add_argument("--topic", help="topic (default: TRIAGE_INPUT_TOPIC)")
    send.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker, and for the topic")
    send.set_defaults(handler=_send)

    deadletters = verbs.add_parser("deadletters", help="what is on the dead-letter topic; replay fixed dead letters")
    dead_verbs = deadletters.add_subparsers(dest="action", required=True)
    dead_stats = dead_verbs.add_parser("stats", help="dead letters by error class and by source topic:partition")
    dead_stats.add_argument("--since", type=duration, help="only this recent: 1h, 24h, 7d ... (default: all)")
    dead_stats.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker")
    dead_replay = dead_verbs.add_parser("replay", help="send dead letters of one class back to their topic")
    dead_replay.add_argument("--error-class", required=True, help="e.g. invalid_event, text_too_long, store_rejected")
    dead_replay.add_argument("--since", type=duration, help="only this recent (default: all)")
    dead_replay.add_argument("--dry-run", action="store_true", help="count what would be sent, send nothing")
    dead_replay.add_argument("--max-replays", type=int, default=3, help="refuse records replayed this often")
    dead_replay.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker")
    deadletters.set_defaults(handler=_deadletters)


def _send(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.send import send_lines

    if args.file == "-":
        sent = send_lines(settings, sys.stdin.buffer, args.topic, wait_s=args.timeout)
    else:
        path = Path(args.file)
        if not path.is_file():
            raise OperatorError(f"no such file: {path}")
        with path.open("rb") as handle:
            total = sum(1 for _ in handle)
        with path.open("rb") as handle:
            sent = send_lines(settings, handle, args.topic, total=total, wait_s=args.timeout)
    print(f"sent {sent} events to {args.topic or settings.input_topic}", file=sys.stderr)
    return ExitStatus.OK


def _deadletters(settings: Settings, args: argparse.Namespace) -> int:
    from worker.contracts.errors import ErrorClass
    from worker.ops import deadletters

    known = sorted(c.value for c in ErrorClass)
    if args.action == "replay" and args.error_class not in known:
        raise OperatorError(f"--error-class must be one of {', '.join(known)}; got {args.error_class!r}")
    if args.action == "replay" and args.max_replays < 1:
        raise OperatorError(f"--max-replays must be at least 1, got {args.max_replays}")
    window = f"in the last {format_duration(args.since)}" if args.since else "on the topic"
    letters = deadletters.read(settings, args.since, wait_s=args.timeout)
    if args.action == "stats":
        print(deadletters.render_stats(deadletters.stats(letters), window))
        return ExitStatus.OK
    done = deadletters.replay(settings, letters, args.error_class, dry_run=args.dry_run, max_replays=args.max_replays)
    print(deadletters.render_replay(done, args.error_class, args.dry_run, args.max_replays))
    return ExitStatus.OK
