"""Dead-letter stats and replay against the real broker and database: a setting that was too strict
dead-letters long texts; once it is fixed, a replay puts them through exactly once, with the
producer's headers, and a record that keeps coming back is refused after --max-replays."""

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
    producer.flush()
    producer.close()
    dead = lambda: len(read_topic(broker.bootstrap_servers, DEAD_LETTERS))  # noqa: E731

    strict = start_worker(TRIAGE_MAX_TEXT_CHARS="60")  # too strict: the 10 long texts are dead-lettered
    wait_until(
        lambda: scalar(database_url, "select count(*) from feedback_results") == 20 and dead() == 10, 120, "20+10"
    )
    assert main(["deadletters", "replay", "--error-class", "text_too_long"]) == 0  # not fixed yet: back they come
    assert "sent 10 dead letters of class text_too_long back: 10 to feedback.events" in capsys.readouterr().out
    wait_until(lambda: dead() == 20, 60, "the replays dead-lettered again")
    assert strict.stop() == 0

    assert main(["deadletters", "stats"]) == 0
    out = capsys.readouterr().out
    assert "20 dead letters on the topic" in out and "text_too_long                      20" in out
    assert main(["deadletters", "replay", "--error-class", "text_too_long", "--dry-run", "--max-replays", "1"]) == 0
    out = capsys.readouterr().out
    assert "would send 10" in out and "refused 10 already replayed 1 times" in out
    assert (
        dead() == 20 and scalar(database_url, "select count(*) from feedback_results") == 20
    )  # a dry run sends nothing

    fixed = start_worker()  # the default limit takes them
    assert main(["deadletters", "replay", "--error-class", "text_too_long"]) == 0  # both copies of each: 20
    assert "sent 20 dead letters" in capsys.readouterr().out
    wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") == 30, 120, "the replays stored")
    assert fixed.stop() == 0
    assert scalar(database_url, "select count(distinct event_id) from feedback_results") == 30  # exactly once
    replayed = [r for r in read_topic(broker.bootstrap_servers, INPUT) if dict(r.headers).get("triage.replay.count")]
    assert len(replayed) == 30  # 10 + 20 sent back
    for record in replayed:
        headers = dict(record.headers)
        i = int(record.key.decode().split("-")[1])
        assert headers["traceparent"] == f"00-{i:032x}-01".encode()  # the producer's headers kept
        assert not any(name.startswith("triage.error") for name in headers)
    assert main(["deadletters", "replay", "--error-class", "no_such_class"]) == 2
