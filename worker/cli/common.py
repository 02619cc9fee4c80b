"""What every group of verbs shares: the database for one verb, durations and file options read the
settings' way, and the help formatter."""

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
    One that cannot be reached, or is behind, is said in one line (see wiring.explain) within the
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


def png(path: Path | None, option: str) -> None:
    if path is not None and path.suffix.lower() != ".png":
        raise OperatorError(f"{option} writes a PNG; name the file *.png, got {path}")
