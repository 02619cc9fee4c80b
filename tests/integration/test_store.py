"""The store and the migrations against a real PostgreSQL: idempotency, outbox, trend view."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from worker.contracts.tables import metadata
from worker.contracts.values import ClassifiedItem, FeedbackItem, Prediction, RawRecord
from worker.ops import migrate
from worker.runtime.store import COPY_STAGING, CREATE_STAGING, ResultStore, _copy, copy_line, is_transient
from worker.runtime.triage import TriagePolicy

pytestmark = pytest.mark.integration

policy = TriagePolicy(0.60)


def result(
    event_id: str,
    label: str,
    score: float,
    *,
    product: str = "web",
    source: str = "survey",
    day: int = 20,
    text_: str = "some text",
    offset: int = 0,
    metadata: dict[str, object] | None = None,
) -> ClassifiedItem:
    prediction = Prediction(label, score, score if label == "negative" else 1 - score, label.upper())  # type: ignore[arg-type]
    item = FeedbackItem(
        record=RawRecord("feedback.events", 0, offset, None, b"{}", timestamp_ms=1_763_000_000_000),
        event_id=event_id,
        text=text_,
        product=product,
        source=source,
        created_at=datetime(2026, 11, day, 12, tzinfo=timezone.utc),
        metadata={"k": "v"} if metadata is None else metadata,
    )
    return ClassifiedItem(item, prediction, policy.decide(prediction), "tiny-model", 3.5, 1)


def test_migrations_match_the_table_definitions_and_downgrade_cleanly(database_url: str) -> None:
    engine = create_engine(database_url)
    inspector = inspect(engine)
    for table in metadata.tables.values():
        assert {c["name"] for c in inspector.get_columns(table.name)} == {c.name for c in table.columns}
    indexes = {i["name"] for i in inspector.get_indexes("feedback_results")}
    assert {"feedback_results_event_time_idx", "feedback_results_product_time_idx"} <= indexes
    assert "sentiment_daily" in inspector.get_view_names()
    migrate.downgrade(database_url, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    migrate.upgrade(database_url)
    assert {"feedback_results", "escalation_outbox"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_writes_are_idempotent_and_outbox_follows_new_escalations_only(database_url: str) -> None:
    engine = create_engine(database_url)
    store = ResultStore(engine, store_text="none")
    batch = [result("a", "negative", 0.9), result("b", "positive", 0.95), result("c", "positive", 0.55)]
    first = store.write(batch)
    assert (first.inserted, first.escalations, first.duplicates) == (3, 2, ())
    again = store.write(batch)  # a replay after a crash
    assert (again.inserted, again.escalations, sorted(again.duplicates)) == (0, 0, ["a", "b", "c"])
    with engine.connect() as connection:
        assert connection.execute(text("select count(*) from feedback_results")).scalar_one() == 3
        outbox = connection.execute(text("select event_id, payload from escalation_outbox order by event_id")).all()
        stored_text = connection.execute(text("select count(*) from feedback_results where text is not null"))
        assert stored_text.scalar_one() == 0  # TRIAGE_STORE_TEXT=false keeps no text
    assert [row.event_id for row in outbox] == ["a", "c"]
    assert outbox[0].payload["reason"] == "negative" and outbox[1].payload["reason"] == "low_confidence"
    assert outbox[0].payload["text"] is None
    engine.dispose()


def test_first_event_with_an_id_wins_within_a_batch(database_url: str) -> None:
    engine = create_engine(database_url)
    outcome = ResultStore(engine).write(
        [
            result("dup", "positive", 0.99, text_="first", offset=1),
            result("dup", "negative", 0.99, text_="second", offset=2),
        ]
    )
    assert (outcome.inserted, outcome.escalations, outcome.duplicates) == (1, 0, ("dup",))
    with engine.connect() as connection:
        row = connection.execute(text("select text, kafka_offset from feedback_results")).one()
        assert tuple(row) == ("first", 1)
        assert connection.execute(text("select count(*) from escalation_outbox")).scalar_one() == 0
    engine.dispose()


def test_text_and_metadata_survive_copy_exactly(database_url: str) -> None:
    """COPY's text format treats tab, newline, CR and backslash specially; stored values must not change."""
    awkward = "tab\there\nnew line\r\nCRLF \\N not null \\. \\\\ back\\slash \u00e9 \U0001f389 \"quoted\" 'single'"
    metadata = {"note": awkward, "nested": [1, 2.5, None, True, {"deep": "a\tb"}], "empty": "", "n": -7}
    engine = create_engine(database_url)
    outcome = ResultStore(engine).write(
        [result("odd\tid", "negative", 0.9, text_=awkward, metadata=metadata), result("empty-meta", "positive", 0.9)]
    )
    assert (outcome.inserted, outcome.escalations) == (2, 1)
    with engine.connect() as connection:
        row = connection.execute(text("select text, metadata from feedback_results where event_id = 'odd\tid'")).one()
        payload = connection.execute(text("select payload from escalation_outbox")).scalar_one()
    engine.dispose()
    assert row.text == awkward and row.metadata == metadata
    assert payload["event_id"] == "odd\tid" and payload["text"] == awkward


def test_copy_line_format() -> None:
    line = copy_line(["a\tb", None, True, False, 0.1, 3, {"k": "x\ny"}])
    assert line == 'a\\tb\t\\N\tt\tf\t0.1\t3\t{"k": "x\\\\ny"}\n'


def test_a_lost_connection_during_copy_is_a_retryable_error(database_url: str) -> None:
    """The store thread retries errors that invalidate the connection; COPY must raise them that way too."""
    engine = create_engine(database_url)
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(CREATE_STAGING)
        pid = connection.exec_driver_sql("select pg_backend_pid()").scalar_one()
        with admin.connect() as other:
            other.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised:
            _copy(connection, COPY_STAGING, io.StringIO(copy_line(["x"] * 21)))
        assert raised.value.connection_invalidated and is_transient(raised.value)
    outcome = ResultStore(engine).write([result("after", "positive", 0.9)])  # the pool opened a new connection
    assert outcome.inserted == 1
    engine.dispose()
    admin.dispose()


def test_sentiment_daily_view(database_url: str) -> None:
    engine = create_engine(database_url)
    ResultStore(engine).write(
        [
            result("1", "negative", 0.9, product="web", day=20),
            result("2", "positive", 0.9, product="web", day=20),
            result("3", "positive", 0.55, product="web", day=20),
            result("4", "positive", 0.9, product="web", day=20),
            result("5", "negative", 0.8, product="app", day=21),
            result("6", "negative", 0.8, product="app", day=21, source="zendesk"),
        ]
    )
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "select day::text, source, product, total, negatives, share_negative::float, escalations "
                "from sentiment_daily order by day, product, source"
            )
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("2026-11-20", "survey", "web", 4, 1, 0.25, 2),
        ("2026-11-21", "survey", "app", 1, 1, 1.0, 1),
        ("2026-11-21", "zendesk", "app", 1, 1, 1.0, 1),
    ]
