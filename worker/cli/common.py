"""What every group of verbs shares: the database for one verb, the one-line answer to an outage,
durations and file options read the settings' way, and the help formatter."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.contracts.errors import OperatorError
from worker.settings import Settings, parse_duration

if TYPE_CHECKING:
    from sqlalchemy import Engine

Verbs = Any  # argparse's _SubParsersAction, which it does not export
FAULTS_DOC = "worker/docs/faults.md"


def duration(value: str) -> timedelta:
    """An option's duration, read like the settings' (30m, 72h, 3d, 2w); argparse reports a bad one."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """The database for one verb, at the migrations' head, its connections closed when the verb ends.
    One that cannot be reached, or is behind, is said in one line (see explain) within the
    connect timeout (5 s)."""
    from worker.runtime.postgres.schema import schema_state
    from worker.runtime.wiring import build_engine

    engine = build_engine(settings)
    try:
        schema = schema_state(engine)
        if not schema.at_head:
            raise OperatorError(schema.problem())
        yield engine
    finally:
        engine.dispose()


def explain(exc: BaseException, settings: Settings) -> OperatorError | None:
    """An outage or a schema problem said in one line for the operator, or None for anything else.

    The verbs' one error path: a database that cannot be reached, one whose schema is behind (a
    missing table or column), a broker that cannot be reached. Never a statement's parameters (they
    may hold customer text), never a secret."""
    from kafka.errors import KafkaError
    from sqlalchemy import make_url
    from sqlalchemy.exc import DBAPIError

    from worker.runtime.postgres.errors import DatabaseMisconfigured, Kind, classify

    if isinstance(exc, DBAPIError):
        error = classify(exc)
        url = make_url(settings.sqlalchemy_url())
        where = f"{url.host or 'the local socket'}:{url.port or 5432}/{url.database}"
        if error.kind is Kind.OUTAGE:
            reason = settings.redact(error.message)[:200]
            return OperatorError(
                f"cannot reach the database at {where} ({error.name}: {reason}); "
                "check TRIAGE_DATABASE_URL and that PostgreSQL is up"
            )
        if error.sqlstate in ("42P01", "42703"):  # undefined table, undefined column: an older schema
            return OperatorError(
                f"the database at {where} lacks what this worker needs ({error.name}); run `triage-worker migrate`"
            )
        return DatabaseMisconfigured(error)
    if isinstance(exc, KafkaError):
        return OperatorError(
            f"cannot reach the broker at {settings.kafka_bootstrap_servers} ({type(exc).__name__}); "
            "check TRIAGE_KAFKA_BOOTSTRAP_SERVERS and that the broker is up"
        )
    return None


def png(path: Path | None, option: str) -> None:
    if path is not None and path.suffix.lower() != ".png":
        raise OperatorError(f"{option} writes a PNG; name the file *.png, got {path}")
