"""Fault 1: SIGKILL the worker again and again, at exact stages and at random moments."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from tests.faults.conftest import FAST_BATCHES
from tests.faults.harness import Expectation, drain_and_stop, make_stream, verify
from tests.services import WorkerProcess, produce, scalar, wait_until
from worker.devtools.local_services import LocalBroker

STAGES = ["after_poll", "after_store", "after_commit", "during_relay", "random"]
RESULTS = "feedback.results"


def test_repeated_sigkill_loses_and_duplicates_nothing(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess], long_run: bool
) -> None:
    n, kills = (20_000, 20) if long_run else (3_000, 5)
    broker.create_topics({RESULTS: 2})  # every stored result goes out too, through the same outbox
    stream = make_stream(n, n // 100)
    placed = produce(broker.bootstrap_servers, stream)
    expected = Expectation.of(stream, placed)
    rows = lambda: scalar(database_url, "select count(*) from feedback_results")  # noqa: E731
    rng = random.Random(20261123)
    # Long runs use bigger batches so 20 lives do not finish the stream early.
    batches = FAST_BATCHES if not long_run else {"TRIAGE_MAX_BATCH_SIZE": "16", "TRIAGE_MAX_WAIT_MS": "5"}
    batches = {**batches, "TRIAGE_RESULTS_TOPIC": RESULTS}

    done = []
    for k in range(kills):
        stage = STAGES[k % len(STAGES)]
        before = rows()
        if before >= len(expected.ids):
            break
        if stage == "random":
            worker = start_worker(**batches)
            wait_until(lambda b=before: rows() > b, 120, "progress before a random kill")
            time.sleep(rng.uniform(0.0, 1.0))
            worker.kill()
        else:
            worker = start_worker(TRIAGE_FAILPOINT=f"{stage}:{rng.randint(1, 6)}", **batches)
            try:
                worker.process.wait(120)
            finally:
                if worker.process.poll() is None:
                    worker.kill()
        assert worker.process.returncode == -9, worker.logs()[-2000:]
        done.append((stage, rows()))

    worker = start_worker(**batches)
    drain_and_stop(worker, database_url, expected, 300, "every row after the last restart")
    assert len(done) == kills, f"the stream finished after {len(done)} of {kills} kills: {done}"
    verify(
        "sigkill",
        broker.bootstrap_servers,
        database_url,
        expected,
        results_topic=RESULTS,
        kills=len(done),
        stages=dict(sorted({s: sum(1 for d in done if d[0] == s) for s, _ in done}.items())),
    )
