"""Fault 11: `run --processes 2`, one child SIGKILLed mid-stream. The supervisor stops the other child
(which drains and commits) and exits non-zero; restarted, the set stores every event exactly once.
Before the kill, one scrape of the supervisor's port carries both children's metrics."""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Callable

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.faults.conftest import FAST_BATCHES
from tests.faults.harness import Expectation, drain_and_stop, make_stream, verify
from tests.services import WorkerProcess, produce, scalar, wait_until
from worker.contracts.errors import ExitStatus
from worker.devtools.local_services import LocalBroker, free_port


def scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


def test_a_child_killed_mid_stream_stops_the_set_and_loses_nothing(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess], long_run: bool
) -> None:
    stream = make_stream(8_000 if long_run else 3_000, 30)
    expected = Expectation.of(stream, produce(broker.bootstrap_servers, stream))
    rows = lambda: scalar(database_url, "select count(*) from feedback_results")  # noqa: E731
    port = free_port()
    supervisor = start_worker(TRIAGE_PROCESSES="2", TRIAGE_METRICS_PORT=str(port), **FAST_BATCHES)
    children = lambda: psutil.Process(supervisor.process.pid).children()  # noqa: E731
    wait_until(lambda: len(children()) == 2, 30, "two worker processes")
    wait_until(lambda: rows() >= 300, 120, "both under way")
    wait_until(lambda: supervisor.logs().count('"partitions_assigned"') >= 2, 60, "both in the group")
    seen = scrape(port)
    assert seen["triage_events_stored_total"] >= 1 and seen["triage_model_info"] == 2  # one line per child

    victim = children()[0]
    victim.send_signal(signal.SIGKILL)
    assert supervisor.process.wait(120) == ExitStatus.CHILD_DIED, supervisor.logs()[-3000:]
    assert '"worker_process_died"' in supervisor.logs()
    assert rows() < len(expected.ids), "the stream was not busy when the child was killed"

    supervisor = start_worker(TRIAGE_PROCESSES="2", **FAST_BATCHES)
    drain_and_stop(supervisor, database_url, expected, 300, "the restarted set finishing")
    verify("processes_sigkill", broker.bootstrap_servers, database_url, expected, processes=2, killed=1)
