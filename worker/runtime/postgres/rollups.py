"""Rollups: fold the counts the store left pending into `sentiment_rollup`, every FOLD_INTERVAL_S.

The store's trigger appends each batch's hourly counts to `sentiment_rollup_pending` (migration
0007); the relay thread of every worker calls `fold` on its round, and one worker at a time does
the work (a try-lock: the others skip that round rather than queue). Reads never wait for a
fold: `sentiment_rollup_live` sums both tables, so the trend figures are exact either way; folding
keeps the pending table small and the queries fast. After a fold the pending table is vacuumed,
so its dead rows do not pile up between autovacuum runs (a table emptied whole shrinks back to
nothing). PostgreSQL skips that vacuum, with a warning, for a user that does not own the table;
autovacuum then does it, later.
"""

from __future__ import annotations

from sqlalchemy import Engine, text

FOLD_INTERVAL_S = 1.0
FOLD_LOCK = 0x726F_6C6C_7570  # pg_try_advisory_xact_lock key shared by every worker


def fold(engine: Engine) -> int | None:
    """Fold every pending row; returns how many, or None when another worker is folding now."""
    with engine.begin() as connection:
        if not connection.execute(text("select pg_try_advisory_xact_lock(:key)"), {"key": FOLD_LOCK}).scalar_one():
            return None
        moved = int(connection.execute(text("select sentiment_rollup_fold()")).scalar_one())
    if moved:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("vacuum sentiment_rollup_pending"))
    return moved
