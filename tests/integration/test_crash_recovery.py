"""Crash safety: SIGKILL the worker mid-stream, restart it, and find every event exactly once."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.checkpoints import CORPUS
from tests.services import ESCALATIONS, INPUT, WorkerProcess, produce, scalar, wait_until
from worker.contracts.values import RawRecord
from worker.devtools.local_services import LocalBroker, read_topic
from worker.runtime.decode import derived_event_id

pytestmark = pytest.mark.integration


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    n = 3000
    events = []
    for i in range(n):
        payload: dict[str, str] = {"text": f"{CORPUS[i % len(CORPUS)]} #{i}", "product": f"p{i % 4}"}
        if i % 3:
            payload["event_id"] = f"crash-{i}"
        events.append((payload.get("event_id", "").encode() or None, json.dumps(payload).encode()))
    placed = produce(broker.bootstrap_servers, events)
    expected = {
        key.decode() if key else derived_event_id(RawRecord(INPUT, p, o, key, value))
        for (key, value), (p, o) in zip(events, placed, strict=True)
    }
    count = lambda: scalar(database_url, "select count(*) from feedback_results")  # noqa: E731
    small_batches = {"TRIAGE_MAX_BATCH_SIZE": "8", "TRIAGE_MAX_WAIT_MS": "5"}

    kills = []
    for threshold in (300, 1200):  # two SIGKILLs at different points of the stream
        worker = start_worker(**small_batches)
        wait_until(lambda t=threshold: count() >= t, 120, f"{threshold} rows before the kill")
        worker.kill()
        kills.append(count())
    assert all(k < n for k in kills), f"the stream finished before a kill: {kills}"

    worker = start_worker(**small_batches)
    wait_until(lambda: count() >= n, 180, "all rows after restart")
    wait_until(
        lambda: scalar(database_url, "select count(*) from escalation_outbox where published_at is null") == 0,
        30,
        "outbox relayed",
    )
    assert worker.stop() == 0

    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as connection:
        ids = connection.execute(text("select event_id from feedback_results")).scalars().all()
        escalated = set(connection.execute(text("select event_id from feedback_results where escalated")).scalars())
        outbox = connection.execute(text("select count(*) from escalation_outbox")).scalar_one()
    engine.dispose()
    assert len(ids) == n and set(ids) == expected  # nothing lost, no duplicates
    assert outbox == len(escalated)
    published = {m.key.decode() for m in read_topic(broker.bootstrap_servers, ESCALATIONS)}
    assert published == escalated  # at least once each (a kill mid-relay may repeat some)
