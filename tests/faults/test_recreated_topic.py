"""Fault 13: the input topic is deleted and created again (or a cluster fails over and offsets start
over). Events without an id then sit at offsets that old events held. Their derived ids carry a
digest of their bytes, so they are stored as the new events they are, not skipped as duplicates of
the old rows (with `topic:partition:offset` alone, every one of them was skipped and committed)."""

from __future__ import annotations

import json
from collections.abc import Callable

from kafka.admin import KafkaAdminClient

from tests.faults.conftest import FAST_BATCHES
from tests.services import INPUT, WorkerProcess, produce, rows, scalar, wait_until
from worker.devtools.local_services import LocalBroker


def without_ids(tag: str, n: int) -> list[tuple[bytes | None, bytes]]:
    """Keyed by customer (not an event id: the payload has none), so both runs fill the same offsets."""
    return [(f"customer-{i}".encode(), json.dumps({"text": f"{tag} feedback number {i}"}).encode()) for i in range(n)]


def test_events_at_reused_offsets_of_a_recreated_topic_are_stored(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    n = 120
    old = produce(broker.bootstrap_servers, without_ids("old", n))
    worker = start_worker(**FAST_BATCHES)
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") == n, 120, "old events stored")
    assert worker.stop() == 0

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.delete_topics([INPUT])
    admin.close()
    broker.create_topics({INPUT: 3})
    new = produce(broker.bootstrap_servers, without_ids("new", n))
    assert new == old  # the same offsets again
    # The group's offsets went with the topic (Apache Kafka removes them): a group starting over.
    worker = start_worker(TRIAGE_GROUP_ID="it-workers-after-recreate", **FAST_BATCHES)
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") == 2 * n, 120, "new events stored")
    assert worker.stop() == 0
    texts = [text for (text,) in rows(database_url, "select text from feedback_results")]
    assert sum(t.startswith("new") for t in texts) == n and sum(t.startswith("old") for t in texts) == n
    assert '"duplicates": 0' in worker.logs() and "duplicate_events_skipped" not in worker.logs()
