"""Service verbs: `run` (the worker, or N of them under a supervisor) and `migrate` (its database)."""

from __future__ import annotations

import argparse
import re
import sys

from worker.cli.common import FAULTS_DOC, Verbs
from worker.contracts.errors import ExitStatus, OperatorError
from worker.logs import get_logger
from worker.settings import Settings

log = get_logger("worker.cli")


def register(verbs: Verbs) -> None:
    run = verbs.add_parser("run", help="consume the input topic and process events until SIGTERM/SIGINT")
    run.add_argument("--processes", type=int, help="worker processes in the group (default: TRIAGE_PROCESSES)")
    run.set_defaults(handler=_run)

    migrate = verbs.add_parser("migrate", help="apply the database migrations (Alembic)")
    migrate.add_argument("--revision", default="head", help="target revision")
    migrate.add_argument("--downgrade", action="store_true", help="downgrade to --revision instead")
    migrate.add_argument(
        "--lock-timeout",
        default="5s",
        help="how long a migration may wait for a table lock before it gives way and tries again",
    )
    migrate.set_defaults(handler=_migrate)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from worker.runtime.ports import UnreadableBatch
    from worker.runtime.retry import Abandoned
    from worker.runtime.shutdown import Shutdown
    from worker.runtime.wiring import build_runner

    log.info("settings_loaded", settings=settings.safe_dump())
    if settings.processes > 1:
        from worker.runtime.service.supervisor import supervise

        return supervise(settings)
    shutdown = Shutdown(settings.shutdown_grace_s)
    shutdown.install_signal_handlers()  # before the start-up waits, so a stop ends them at once
    try:
        runner = build_runner(settings, shutdown=shutdown)
    except Abandoned:
        log.info("worker_stopped", during="start-up")
        return ExitStatus.OK
    try:
        runner.run()
    except UnreadableBatch as exc:
        raise OperatorError(f"{exc}; see {FAULTS_DOC}", exit_status=ExitStatus.UNREADABLE_BATCH) from None
    return ExitStatus.FAILED if runner.abandoned else ExitStatus.OK


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops import migrate

    if not re.fullmatch(r"\d+(ms|s|min)", args.lock_timeout):
        raise OperatorError(
            f"--lock-timeout takes a PostgreSQL duration like 500ms, 5s or 1min, got {args.lock_timeout!r}"
        )
    if args.downgrade:
        migrate.downgrade(settings.sqlalchemy_url(), args.revision, args.lock_timeout)
    else:
        migrate.upgrade(settings.sqlalchemy_url(), args.revision, args.lock_timeout)
    print(f"database {'downgraded' if args.downgrade else 'migrated'} to {args.revision}", file=sys.stderr)
    return ExitStatus.OK
