"""Migrate: apply the Alembic migrations in `migrations/` to TRIAGE_DATABASE_URL.

The Alembic config is built in code (see runtime/postgres/schema, which also tells whether a database
is at the head), so there is no alembic.ini to keep in step, and `triage-worker migrate` works from a
checkout and from an installed wheel alike. Each migration takes its locks with `lock_timeout` and
is tried again when it times out (see migrations/env.py), so it never holds the workers' inserts
queued behind a long reader for longer than that.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from worker.runtime.postgres.schema import alembic_config

LOCK_TIMEOUT = "5s"


def upgrade(database_url: str, revision: str = "head", lock_timeout: str = LOCK_TIMEOUT) -> None:
    command.upgrade(_config(database_url, lock_timeout), revision)


def downgrade(database_url: str, revision: str, lock_timeout: str = LOCK_TIMEOUT) -> None:
    command.downgrade(_config(database_url, lock_timeout), revision)


def _config(database_url: str, lock_timeout: str) -> Config:
    config = alembic_config(database_url)
    config.set_main_option("triage.lock_timeout", lock_timeout)
    return config
