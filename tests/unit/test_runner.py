"""The runner's loop on in-memory fakes: commit order, backpressure, revokes, shutdown, poison batches."""

from __future__ import annotations

import threading
import time

import pytest

from tests.unit.fakes import MemoryDeadLetters, MemorySource, MemoryStore, build_runner, event, wait_for
from worker.contracts.errors import ErrorClass
from worker.runtime.batches import Totals
from worker.runtime.runner import Runner


def stream(partitions: int, per_partition: int) -> dict[int, list[bytes]]:
    texts = ["great", "bad service", "unsure about it", "boom"]
    values = {p: [event(f"p{p}-{i}", texts[i % 4]) for i in range(per_partition)] for p in range(partitions)}
    values[0].insert(3, b"not json")  # one malformed record in the middle of a partition
    return values


def all_handled(source: MemorySource, store: MemoryStore, dead: MemoryDeadLetters) -> bool:
    return len(store.rows) + len(dead.sent) >= sum(len(r) for r in source.records.values())


def run_in_thread(runner: Runner, until: object = None) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(runner.run(until))  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_every_record_is_stored_or_dead_lettered_and_offsets_follow_in_order() -> None:
    source, store, dead = MemorySource(stream(3, 10)), MemoryStore(), MemoryDeadLetters()
    runner = build_runner(source, store, dead)
    totals = runner.run(until=lambda t: t.consumed >= 31)
    assert len(store.rows) == 30 - 6  # the fourth and eighth text of each partition the model cannot take
    assert [r.error_class for r in dead.sent].count(ErrorClass.CLASSIFICATION_FAILED) == 6
    assert [r.error_class for r in dead.sent].count(ErrorClass.INVALID_JSON) == 1
    assert source.committed == source.end_offsets()
    for partition in source.records:  # per partition, each commit moves the offset forward
        offsets = [o[partition] for _, o in source.commits if partition in o]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert totals.consumed == 31 and totals.stored == 24 and totals.dead_lettered == 7
    assert totals.escalated == sum(r.decision.escalate for r in store.rows.values()) > 0
    assert totals.batches == sum(1 for how, _ in source.commits if how == "poll_loop")
    assert source.closed and not runner.abandoned


def test_a_full_pipeline_pauses_the_source_keeps_polling_and_resumes() -> None:
    source, store, dead = MemorySource({0: [event(f"e{i}") for i in range(40)]}), MemoryStore(), MemoryDeadLetters()
    store.gate.clear()  # the store stage holds its first batch: the pipeline fills up behind it
    runner = build_runner(source, store, dead, batch_size=4, depth=2)
    thread, outcome = run_in_thread(runner, until=lambda t: t.stored >= 40)
    wait_for(lambda: source.paused and source.polls_while_paused > 5)
    assert source.committed == {} and source.position[0] == 8  # two batches in flight, nothing more fetched
    store.gate.set()
    thread.join(5)
    assert isinstance(outcome[0], Totals) and len(store.rows) == 40
    assert source.committed == {0: 40} and not source.paused


def test_a_revoke_commits_what_finished_and_never_commits_what_did_not() -> None:
    source, store, dead = MemorySource({0: [event(f"e{i}") for i in range(24)]}), MemoryStore(), MemoryDeadLetters()
    runner = build_runner(source, store, dead, batch_size=4, depth=2, revoke_drain_s=0.2)
    thread, outcome = run_in_thread(runner, until=lambda t: source.committed.get(0) == 24)
    wait_for(lambda: len(store.rows) >= 8)
    store.gate.clear()  # the next batch hangs in the store stage, as in a database outage
    wait_for(store.waiting.is_set)
    source.request_rebalance()
    wait_for(source.rebalanced.is_set)
    assert source.committed == {0: len(store.rows)}  # the held batch was not committed
    store.gate.set()  # the held batch is stored (never committed), then replayed from the committed offset
    thread.join(5)
    assert isinstance(outcome[0], Totals), outcome
    assert len(store.rows) == 24 and source.committed == {0: 24}
    assert outcome[0].duplicates > 0  # the orphaned batch's records came again and were recognised


def test_a_revoke_with_quick_stages_hands_back_every_finished_batch() -> None:
    source, store, dead = MemorySource({0: [event(f"e{i}") for i in range(40)]}), MemoryStore(), MemoryDeadLetters()
    runner = build_runner(source, store, dead, batch_size=4, depth=3)
    thread, outcome = run_in_thread(runner, until=lambda t: source.committed.get(0) == 40)
    wait_for(lambda: len(store.rows) >= 4)
    store.gate.clear()
    wait_for(store.waiting.is_set)
    source.before_revoke = store.gate.set  # the held batch finishes during the revoke drain
    source.request_rebalance()
    thread.join(5)
    assert isinstance(outcome[0], Totals) and len(store.rows) == 40 and source.committed == {0: 40}
    revoked = [offsets for how, offsets in source.commits if how == "on_revoke"]
    assert revoked and revoked[0][0] % 4 == 0  # whole batches only
    assert source.revoke_thread == "fake-kafka-network"  # off the polling thread, as kafka-python runs it


def test_shutdown_finishes_the_batches_in_hand_and_commits_them() -> None:
    source, store, dead = MemorySource({0: [event(f"e{i}") for i in range(400)]}), MemoryStore(), MemoryDeadLetters()
    runner = build_runner(source, store, dead, batch_size=4, depth=3)
    thread, outcome = run_in_thread(runner)
    wait_for(lambda: len(store.rows) >= 20)
    runner.shutdown.request("test")
    thread.join(5)
    assert isinstance(outcome[0], Totals) and not runner.abandoned
    assert source.committed == {0: len(store.rows)} and len(store.rows) < 400 and source.closed


def test_shutdown_during_an_outage_abandons_at_the_deadline_and_commits_nothing_unstored() -> None:
    source, store, dead = MemorySource({0: [event(f"e{i}") for i in range(40)]}), MemoryStore(), MemoryDeadLetters()
    runner = build_runner(source, store, dead, batch_size=4, depth=2, grace_s=0.3)
    thread, outcome = run_in_thread(runner)
    wait_for(lambda: len(store.rows) >= 8)
    store.outage.set()
    wait_for(lambda: store.attempts > len(store.rows) // 4 + 3)  # retrying
    asked = time.monotonic()
    runner.shutdown.request("test")
    thread.join(5)
    assert time.monotonic() - asked < 2
    assert isinstance(outcome[0], Totals) and runner.abandoned
    assert source.committed == {0: len(store.rows)}


def test_a_second_request_abandons_at_once() -> None:
    source, store, dead = MemorySource({0: [event(f"e{i}") for i in range(40)]}), MemoryStore(), MemoryDeadLetters()
    runner = build_runner(source, store, dead, grace_s=60)
    thread, outcome = run_in_thread(runner)
    wait_for(lambda: len(store.rows) >= 4)
    store.gate.clear()
    wait_for(store.waiting.is_set)
    runner.shutdown.request("SIGTERM")
    runner.shutdown.request("SIGTERM")
    thread.join(5)
    assert not thread.is_alive() and runner.abandoned and isinstance(outcome[0], Totals)
    store.gate.set()


def test_an_outage_is_waited_out_and_nothing_is_committed_meanwhile() -> None:
    source, store, dead = MemorySource({0: [event(f"e{i}") for i in range(40)]}), MemoryStore(), MemoryDeadLetters()
    runner = build_runner(source, store, dead)
    store.outage.set()
    thread, outcome = run_in_thread(runner, until=lambda t: t.stored >= 40)
    wait_for(lambda: store.attempts >= 5)
    assert source.committed == {} and source.paused
    store.outage.clear()
    thread.join(5)
    assert isinstance(outcome[0], Totals) and source.committed == {0: 40}


def test_a_poison_batch_stops_the_runner_and_is_never_committed() -> None:
    source, store, dead = MemorySource({0: [event(f"e{i}") for i in range(40)]}), MemoryStore(), MemoryDeadLetters()
    store.fail_on = {"e13"}
    runner = build_runner(source, store, dead, batch_size=4)
    with pytest.raises(ValueError, match="a bug"):
        runner.run()
    assert source.committed == {0: 12} and "e12" not in store.rows and source.closed
