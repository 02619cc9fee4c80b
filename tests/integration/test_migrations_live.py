"""Migrations under live traffic: a migration that waits for a table lock behind a long reader gives way
after its lock_timeout, so the workers' inserts are never queued behind it for long, then tries again
and completes once the reader is done."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine, text

from worker.ops import migrate

pytestmark = pytest.mark.integration
INSERT = text(
    "insert into escalation_outbox (event_id, kind, payload, created_at, attempts) "
    "values (:id, 'escalation', '{}'::jsonb, now(), 0)"
)


def test_a_migration_blocked_by_a_long_reader_does_not_hold_the_inserts_queued_behind_it(database_url: str) -> None:
    migrate.downgrade(database_url, "0009_identity_audits_shadow")
    engine = create_engine(database_url)
    reader = engine.connect()
    reader.execute(text("begin; select count(*) from escalation_outbox"))  # holds its lock until it ends
    outcome: list[BaseException | None] = []

    def upgrade() -> None:
        try:
            migrate.upgrade(database_url, "head", lock_timeout="500ms")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    migration = threading.Thread(target=upgrade)
    migration.start()
    time.sleep(0.2)  # the ALTER TABLE is now queued behind the reader
    waited = []
    for i in range(3):  # the workers' inserts: each waits at most about one lock_timeout, not the reader's life
        started = time.monotonic()
        with engine.begin() as writer:
            writer.execute(INSERT, {"id": f"live-{i}"})
        waited.append(time.monotonic() - started)
        time.sleep(0.3)
    assert max(waited) < 2.0, waited
    assert migration.is_alive()  # still trying: it gives way each time and tries again
    reader.execute(text("commit"))
    reader.close()
    migration.join(60)
    assert outcome == [None]
    with engine.connect() as connection:
        columns = {r[0] for r in connection.execute(text(
            "select column_name from information_schema.columns where table_name = 'escalation_outbox'"
        ))}  # fmt: skip
        assert {"parked_at", "parked_reason"} <= columns
        assert connection.execute(text("select count(*) from escalation_outbox")).scalar_one() == 3
    engine.dispose()
