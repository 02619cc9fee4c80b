"""Data over time against the real database and broker: the results topic, text storage choices,
outbox retention, `forget`, and migration 0005 with data."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import create_engine, inspect, text

from tests.checkpoints import CORPUS
from tests.integration.test_store import result
from tests.services import WorkerProcess, produce, rows, wait_until
from worker.cli import main
from worker.contracts.values import ClassifiedItem
from worker.devtools.local_services import LocalBroker, read_topic
from worker.ops import migrate
from worker.runtime.postgres.housekeeping import prune_outbox
from worker.runtime.postgres.store import ResultStore

pytestmark = pytest.mark.integration

RESULTS = "feedback.results"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def with_customer(item, customer: str):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(
        item, item=replace(item.item, customer_id=customer, text=f"secret of {customer} {item.item.event_id}")
    )


def test_the_results_topic_carries_every_stored_result_once(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    broker.create_topics({RESULTS: 2})
    events = [(f"r-{i}".encode(), json.dumps({"event_id": f"r-{i}", "text": f"{CORPUS[i % 10]} {i}"}).encode())
              for i in range(60)]  # fmt: skip
    produce(broker.bootstrap_servers, events + events[:10])  # ten replays: stored once, published once
    worker = start_worker(TRIAGE_RESULTS_TOPIC=RESULTS, TRIAGE_MAX_BATCH_SIZE="16", TRIAGE_STORE_TEXT="escalated")
    wait_until(lambda: rows(database_url, "select count(*) from feedback_results") == [(60,)], 120, "stored")
    wait_until(
        lambda: rows(database_url, "select count(*) from escalation_outbox where published_at is null") == [(0,)],
        30,
        "relayed",
    )
    worker.stop()
    schema = json.loads((SCHEMAS / "triage-result.v2.json").read_text())
    published = [json.loads(r.value) for r in read_topic(broker.bootstrap_servers, RESULTS)]
    for payload in published:
        jsonschema.validate(payload, schema)
    assert sorted(p["event_id"] for p in published) == sorted(f"r-{i}" for i in range(60))
    stored = dict(rows(database_url, "select event_id, escalated from feedback_results"))
    for payload in published:  # text only where a human reads it (TRIAGE_STORE_TEXT=escalated)
        assert payload["escalated"] == stored[payload["event_id"]]
        assert (payload["text"] is not None) == payload["escalated"]
    assert rows(database_url, "select bool_and((text is not null) = escalated) from feedback_results") == [(True,)]
    escalations = read_topic(broker.bootstrap_servers, "feedback.escalations")
    assert len(escalations) == sum(stored.values()) and all(json.loads(r.value)["text"] for r in escalations)


def test_forget_erases_a_customer_everywhere_and_keeps_the_counts(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database_url)
    engine = create_engine(database_url)
    items = [with_customer(result(f"a-{i}", "negative" if i % 2 else "positive", 0.9), "alice") for i in range(6)]
    items += [with_customer(result(f"b-{i}", "negative", 0.9), "bob") for i in range(3)]
    ResultStore(engine, publish_results=True).write(items)
    counts = rows(database_url, "select sum(total), sum(negatives) from sentiment_rollup_live")
    assert main(["forget", "--customer-id", "alice"]) == 0
    assert "forgot customer alice: text, customer_id and metadata cleared in 6 results" in capsys.readouterr().out
    everywhere = """
        select (select count(*) from feedback_results where text like '%alice%' or customer_id = 'alice'
                   or metadata::text like '%alice%')
             + (select count(*) from escalation_outbox where payload::text like '%alice%')
    """
    assert rows(database_url, everywhere) == [(0,)]
    assert rows(
        database_url, "select count(*) from feedback_results where customer_id = 'bob' and text is not null"
    ) == [(3,)]
    assert rows(database_url, "select count(*) from escalation_outbox where payload->>'text' like '%bob%'") == [(6,)]
    assert rows(database_url, "select sum(total), sum(negatives) from sentiment_rollup_live") == counts
    assert rows(database_url, "select count(*) from feedback_results where event_id like 'a-%'") == [(6,)]
    assert main(["forget", "--event-id", "b-0", "--event-id", "b-1"]) == 0
    assert "cleared in 2 results, text, customer_id and metadata in 4 outbox payloads" in capsys.readouterr().out
    assert rows(database_url, "select count(*) from feedback_results where customer_id = 'bob'") == [(1,)]
    assert main(["forget", "--customer-id", "nobody"]) == 0  # nothing to do is no error
    with pytest.raises(SystemExit):
        main(["forget"])
    engine.dispose()


def test_outbox_retention_deletes_only_rows_published_long_ago(database_url: str) -> None:
    engine = create_engine(database_url)
    ResultStore(engine, publish_results=True).write([result(f"o-{i}", "negative", 0.9) for i in range(6)])
    with engine.begin() as connection:
        connection.execute(text("update escalation_outbox set created_at = now() - interval '30 days'"))
        connection.execute(text("update escalation_outbox set published_at = now() - interval '4 days' "
                                "where event_id in ('o-0', 'o-1')"))  # fmt: skip
        connection.execute(text("update escalation_outbox set published_at = now() - interval '1 hour' "
                                "where event_id = 'o-2'"))  # fmt: skip
    assert prune_outbox(engine, timedelta(days=3)).deleted == 4  # o-0 and o-1, escalation and result each
    left = rows(database_url, "select event_id, published_at is null from escalation_outbox order by 1, kind")
    assert [e for e, _ in left] == ["o-2", "o-2", "o-3", "o-3", "o-4", "o-4", "o-5", "o-5"]
    assert prune_outbox(engine, timedelta(days=3)).deleted == 0
    assert prune_outbox(engine, None).deleted == 0
    engine.dispose()


def test_migration_0005_goes_down_and_up_with_data(database_url: str) -> None:
    engine = create_engine(database_url)
    ResultStore(engine, publish_results=True).write([result(f"m-{i}", "negative", 0.9) for i in range(3)])
    migrate.downgrade(database_url, "0004_rollups")
    assert "kind" not in {c["name"] for c in inspect(engine).get_columns("escalation_outbox")}
    assert rows(database_url, "select count(*) from escalation_outbox") == [(3,)]  # the escalations stay
    migrate.upgrade(database_url)
    assert rows(database_url, "select kind, count(*) from escalation_outbox group by 1") == [("escalation", 3)]
    engine.dispose()


def test_replays_across_a_week_boundary_store_nothing_and_retention_drops_whole_weeks(database_url: str) -> None:
    from datetime import datetime, timezone

    from worker.runtime.postgres.partitions import ResultPartitions

    engine = create_engine(database_url)
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        for days in (35, 28, 21, 14, 7):
            connection.execute(
                text("select feedback_results_ensure_week(cast(:d as date))"), {"d": now - timedelta(days=days)}
            )
    from dataclasses import replace

    from worker.contracts.values import ShadowAnswer

    store = ResultStore(engine)

    def with_shadow(item: ClassifiedItem) -> ClassifiedItem:
        return replace(item, shadow=ShadowAnswer("candidate", "dir:c", None, item.prediction, item.decision))

    old = [with_shadow(result(f"old-{i}", "negative", 0.9)) for i in range(5)]
    assert store.write(old, now=now - timedelta(days=25)).inserted == 5
    replay = store.write(old, now=now - timedelta(days=6))  # another week, another partition: nothing new
    assert replay.inserted == 0 and sorted(replay.duplicates) == sorted(r.item.event_id for r in old)
    assert store.write([with_shadow(result(f"new-{i}", "positive", 0.9)) for i in range(5)], now=now).inserted == 5
    weeks = rows(database_url, "select tableoid::regclass::text, count(*) from feedback_results group by 1 order by 1")
    assert [n for _, n in weeks] == [5, 5] and all(name.startswith("feedback_results_w") for name, _ in weeks)
    assert rows(database_url, "select count(*) from feedback_results_default") == [(0,)]

    dropped = ResultPartitions(engine, keep=timedelta(days=14)).drop_expired(now=now)
    assert weeks[0][0] in dropped.partitions and weeks[1][0] not in dropped.partitions and dropped.ids == 5
    assert rows(database_url, "select count(*) from feedback_results") == [(5,)]
    assert rows(database_url, "select count(*) from result_ids") == [(5,)]
    assert rows(database_url, "select event_id from shadow_results order by 1") == [(f"new-{i}",) for i in range(5)]
    assert rows(database_url, "select sum(total) from sentiment_rollup_live") == [(10,)]  # the counts outlive the rows
    assert ResultPartitions(engine, keep=None).drop_expired(now=now) == type(dropped)([], 0)
    assert store.write(old, now=now).inserted == 5  # older than the retention: stored again, as documented
    engine.dispose()


def test_migration_0006_goes_down_and_up_with_data(database_url: str) -> None:
    engine = create_engine(database_url)
    ResultStore(engine, publish_results=True).write([result(f"p-{i}", "negative", 0.9) for i in range(4)])
    assert main_ack(database_url, "p-0") == 0
    before = rows(database_url, "select event_id, acknowledged_by, text from feedback_results order by 1")
    counts = rows(database_url, "select sum(total), sum(open_escalations) from sentiment_rollup_live")
    migrate.downgrade(database_url, "0005_outbox_kinds_and_retention")
    assert "result_ids" not in inspect(engine).get_table_names()
    assert rows(database_url, "select event_id, acknowledged_by, text from feedback_results order by 1") == before
    assert {"feedback_results_event_id_key"} <= {
        c["name"] for c in inspect(engine).get_unique_constraints("feedback_results")
    }
    migrate.upgrade(database_url)
    assert rows(database_url, "select event_id, acknowledged_by, text from feedback_results order by 1") == before
    assert rows(database_url, "select count(*) from result_ids") == [(4,)]
    assert (
        rows(database_url, "select sum(total), sum(open_escalations) from sentiment_rollup_live") == counts
    )  # not recounted
    assert rows(database_url, "select count(*) from escalation_backlog") == [(3,)]
    assert ResultStore(engine).write([result("p-9", "negative", 0.9)]).inserted == 1  # ids go on from the old ones
    assert rows(database_url, "select count(distinct id) from feedback_results") == [(5,)]
    engine.dispose()


def main_ack(database_url: str, event_id: str) -> int:
    from worker.ops.acks import acknowledge

    engine = create_engine(database_url)
    try:
        return 0 if acknowledge(engine, [event_id], "rita").ok else 1
    finally:
        engine.dispose()
