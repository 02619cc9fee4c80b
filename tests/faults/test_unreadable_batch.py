"""Fault 10: a record batch that arrives corrupt (its CRC does not match) stops the worker with one
clear line naming the topic, partition and offset, after committing what came before it; nothing
is skipped, so once the batch can be read again every event is stored exactly once.

The proxy in front of the broker changes one byte of the batch that carries a marker, in transit:
the consumer's CRC check fails exactly there, as it would on a damaged log segment.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.faults.harness import Expectation, TcpProxy, drain_and_stop, make_stream, verify
from tests.services import INPUT, WorkerProcess, committed_offsets, produce, scalar
from worker.devtools.local_services import LocalBroker

MARKER = b"CORRUPT-IN-TRANSIT"


def test_a_corrupt_batch_stops_the_worker_with_one_line_and_skips_nothing(
    proxied_broker: tuple[LocalBroker, TcpProxy], database_url: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    broker, proxy = proxied_broker
    before, after = make_stream(300, 3, tag="a"), make_stream(300, 3, tag="b")
    marked = (b"marked", json.dumps({"event_id": "marked", "text": f"fine {MARKER.decode()}"}).encode())
    placed = produce(broker.bootstrap_servers, before)
    [(partition, offset)] = produce(broker.bootstrap_servers, [marked])  # a batch of its own
    placed += [(partition, offset)] + produce(broker.bootstrap_servers, after)
    stream = [*before, marked, *after]
    expected = Expectation.of(stream, placed)

    proxy.corrupt_marker = MARKER
    env = {**worker_env, "TRIAGE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "TRIAGE_MAX_BATCH_SIZE": "16"}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    code = worker.process.wait(120)
    logs = worker.logs()
    assert code == 3, logs[-3000:]
    where = f"{INPUT}:{partition}@{offset}"
    lines = [line for line in logs.splitlines() if '"batch_unreadable"' in line]
    assert len(lines) == 1 and where in lines[0] and "crc" in lines[0].lower(), lines
    assert f"triage-worker: unreadable record batch at {where}" in logs.splitlines()[-1]
    assert "Traceback" not in logs
    committed = committed_offsets(broker.bootstrap_servers)
    assert (committed[partition] or 0) <= offset  # nothing at or after the bad batch was skipped
    assert scalar(database_url, "select count(*) from feedback_results where event_id = 'marked'") == 0

    proxy.corrupt_marker = None  # the batch reads again (a repaired replica, say): the worker takes it all
    worker = WorkerProcess(env, tmp_path / "worker-2.log")
    drain_and_stop(worker, database_url, expected, 180, "every event once the batch reads again")
    verify("unreadable_batch", broker.bootstrap_servers, database_url, expected, exit_code=code, where=where)
