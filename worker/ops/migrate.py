"""Migrate: apply the Alembic migrations in `migrations/` to TRIAGE_DATABASE_URL.

The Alembic config is built in code (see runtime/schema, which also tells whether a database is
at the head), so there is no alembic.ini to keep in step, and `triage-worker migrate` works from a
checkout and from an installed wheel alike.
"""

from __future__ import annotations

from alembic import command

from worker.runtime.postgres.schema import alembic_config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
