"""Dead-letter stats and replay against the real broker and database: a setting that was too strict
dead-letters long texts; once it is fixed, a replay puts them through exactly once, with the
producer's headers, and a record that keeps coming back is refused after --max-replays. Each record
goes back once per replay, however many dead letters it left, and events without an id keep the id
of where they were first consumed: any number of replays stores one row each."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from kafka import KafkaProducer

from tests.checkpoints import CORPUS
from tests.services import DEAD_LETTERS, INPUT, WorkerProcess, scalar, wait_until
from worker.cli import main
from worker.devtools.local_services import LocalBroker, read_topic

pytestmark = pytest.mark.integration


def test_replay_puts_fixed_dead_letters_through_exactly_once(
    broker: LocalBroker,
    database_url: str,
    worker_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in worker_env.items():
        if name.startswith("TRIAGE_"):
            monkeypatch.setenv(name, value)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    for i in range(30):
        text = CORPUS[i % len(CORPUS)] + (" and it went on and on" * 5 if i % 3 == 0 else "")
        value = json.dumps({"event_id": f"r-{i}", "text": text}).encode()
        producer.send(INPUT, key=f"r-{i}".encode(), value=value, headers=[("traceparent", f"00-{i:032x}-01".encode())])
    for i in range(6):  # long texts without an event id: their id is derived from where they were consumed
        producer.send(
            INPUT, value=json.dumps({"text": f"{CORPUS[i]} {i} and it went on and on and on and on"}).encode()
        )
    producer.flush()
    producer.close()
    dead = lambda: len(read_topic(broker.bootstrap_servers, DEAD_LETTERS))  # noqa: E731

    strict = start_worker(TRIAGE_MAX_TEXT_CHARS="60")  # too strict: the 16 long texts are dead-lettered
    wait_until(
        lambda: scalar(database_url, "select count(*) from feedback_results") == 20 and dead() == 16, 120, "20+16"
    )
    assert main(["deadletters", "replay", "--error-class", "text_too_long"]) == 0  # not fixed yet: back they come
    assert "sent 16 dead letters of class text_too_long back: 16 to feedback.events" in capsys.readouterr().out
    wait_until(lambda: dead() == 32, 60, "the replays dead-lettered again")
    assert strict.stop() == 0

    assert main(["deadletters", "stats"]) == 0
    out = capsys.readouterr().out
    assert "32 dead letters on the topic" in out and "text_too_long                      32" in out
    # Each record left two dead letters; it goes back once, and it was replayed once already.
    assert main(["deadletters", "replay", "--error-class", "text_too_long", "--dry-run", "--max-replays", "1"]) == 0
    out = capsys.readouterr().out
    assert "would send 0" in out and "refused 16 already replayed 1 times" in out
    assert (
        dead() == 32 and scalar(database_url, "select count(*) from feedback_results") == 20
    )  # a dry run sends nothing

    fixed = start_worker()  # the default limit takes them
    for _ in range(2):  # twice: the second stores nothing new, ids derived from the origin included
        assert main(["deadletters", "replay", "--error-class", "text_too_long"]) == 0
        assert "sent 16 dead letters" in capsys.readouterr().out
        wait_until(
            lambda: scalar(database_url, "select count(*) from feedback_results") == 36, 120, "the replays stored"
        )
    wait_until(
        lambda: scalar(database_url, "select count(*) from escalation_outbox where published_at is null") == 0,
        60,
        "relayed",
    )
    assert fixed.stop() == 0
    assert scalar(database_url, "select count(*) from feedback_results") == 36  # exactly once each
    assert scalar(database_url, "select count(*) from feedback_results where event_id like 'feedback.events:%'") == 6
    on_input = read_topic(broker.bootstrap_servers, INPUT)
    replayed = [r for r in on_input if dict(r.headers).get("triage.replay.count")]
    assert len(replayed) == 48  # 16 sent back three times
    long_ones = [r for r in on_input if r not in replayed and (not r.key or int(r.key.decode()[2:]) % 3 == 0)]
    first_places = {f"feedback.events:{r.partition}:{r.offset}".encode() for r in long_ones}
    assert len(first_places) == 16 and {dict(r.headers)["triage.origin"] for r in replayed} == first_places
    for record in (r for r in replayed if r.key):
        headers = dict(record.headers)
        i = int(record.key.decode().split("-")[1])
        assert headers["traceparent"] == f"00-{i:032x}-01".encode()  # the producer's headers kept
        assert not any(name.startswith("triage.error") for name in headers)
    assert main(["deadletters", "replay", "--error-class", "no_such_class"]) == 2
