"""Alembic environment: runs the migrations against the URL the worker passes in.

`triage-worker migrate` builds the Alembic config in code (see worker/runtime/postgres/schema.py) and
sets `sqlalchemy.url` from TRIAGE_DATABASE_URL, so there is no alembic.ini to keep in step.

Under live traffic: every migration runs in its own transaction with `lock_timeout` set
(LOCK_TIMEOUT, 5 s). An `ALTER TABLE` that queues behind a long reader would otherwise hold every
insert of the workers queued behind it for as long as the reader runs; with the timeout it gives
up (SQLSTATE 55P03), the transaction rolls back, and the migration is tried again after a pause,
up to ATTEMPTS times, from the revision the database is at (see worker/docs/operating.md).
"""

import re
import sys
import time

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import DBAPIError

config = context.config
LOCK_TIMEOUT = config.get_main_option("triage.lock_timeout") or "5s"
ATTEMPTS = int(config.get_main_option("triage.lock_attempts") or "12")
LOCK_NOT_AVAILABLE = "55P03"
if not re.fullmatch(r"\d+(ms|s|min)?", LOCK_TIMEOUT):
    raise ValueError(f"lock timeout {LOCK_TIMEOUT!r}: expected a PostgreSQL duration like 500ms, 5s or 1min")


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    try:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with engine.connect() as connection:
                    connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
                    connection.commit()
                    context.configure(connection=connection, transaction_per_migration=True)
                    with context.begin_transaction():
                        context.run_migrations()
                return
            except DBAPIError as exc:
                if getattr(exc.orig, "pgcode", None) != LOCK_NOT_AVAILABLE or attempt == ATTEMPTS:
                    raise
                pause = min(2**attempt, 30)
                print(
                    f"migration waited {LOCK_TIMEOUT} for a lock (a long transaction holds it); "
                    f"trying again in {pause} s ({attempt}/{ATTEMPTS})",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(pause)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
