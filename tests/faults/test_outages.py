"""Faults 2 and 3: PostgreSQL and the broker unavailable mid-stream, then back."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from tests.faults.conftest import FAST_BATCHES
from tests.faults.harness import Expectation, TcpProxy, drain_and_stop, make_stream, verify
from tests.services import (
    WorkerProcess,
    committed_offsets,
    produce,
    scalar,
    wait_until,
)
from worker.devtools.local_services import LocalBroker


def alter_database(server_url: str, database_url: str, clause: str, end_sessions: bool = True) -> None:
    """`alter database <the test database> <clause>`, then end its sessions so that new ones take it."""
    name = make_url(database_url).database
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'alter database "{name}" {clause}'))
        if end_sessions:
            connection.execute(
                text("select pg_terminate_backend(pid) from pg_stat_activity where datname = :n"), {"n": name}
            )
    admin.dispose()


def hold_outage(
    worker: WorkerProcess, committed: Callable[[], int], what: str, *, retries: int = 4, long_s: float = 0
) -> float:
    """Through an outage: the worker stays up, keeps retrying, and commits nothing. Held until the
    store has retried `retries` times more after its first two (and `long_s` at least, under --long).
    The committed count is read after the second retry: a commit under way as the outage began may
    still land before it. Returns the seconds it held the outage for, from the first retry."""
    tried = lambda: worker.logs().count('"store_retry"')  # noqa: E731
    before = tried()
    began = time.monotonic()
    wait_until(lambda: tried() >= before + 2, 60, f"the store waiting out {what}")
    committed_early, started = committed(), time.monotonic()
    wait_until(lambda: tried() >= before + 2 + retries, 60, f"{retries} more retries under {what}")
    time.sleep(max(long_s - (time.monotonic() - started), 0))
    assert worker.process.poll() is None, f"the worker died under {what}: {worker.logs()[-2000:]}"
    assert committed() == committed_early, f"offsets moved while nothing could be stored ({what})"
    return round(time.monotonic() - began, 1)


def hold_broker_outage(worker: WorkerProcess, env: dict[str, str], long_s: float = 0) -> float:
    """Through a broker outage: once the worker has noticed it (a commit or a publish failed), held
    for twice the session timeout, so the group has expired the worker's membership when the broker
    returns (and `long_s` at least, under --long). Returns the seconds held."""
    began, mark = time.monotonic(), len(worker.logs())
    noticed = ('"offset_commit_failed"', '"escalations_unpublished"', '"dead_letter_retry"')
    wait_until(lambda: any(event in worker.logs()[mark:] for event in noticed), 60, "the worker noticing the outage")
    time.sleep(max(2 * int(env["TRIAGE_KAFKA_SESSION_TIMEOUT_MS"]) / 1000, long_s - (time.monotonic() - began)))
    assert worker.process.poll() is None, f"the worker died during the outage: {worker.logs()[-2000:]}"
    return round(time.monotonic() - began, 1)


def set_database_reachable(server_url: str, database_url: str, reachable: bool) -> None:
    """Refuse (or allow again) every connection to the test database and drop the open ones."""
    alter_database(server_url, database_url, f"allow_connections {str(reachable).lower()}", end_sessions=not reachable)


def test_postgres_outage_pauses_commits_and_catches_up(
    broker: LocalBroker,
    database_url: str,
    postgres_server_url: str,
    start_worker: Callable[..., WorkerProcess],
    long_run: bool,
) -> None:
    n, outage_s = (10_000, 45) if long_run else (3_000, 0)
    stream = make_stream(n, 30)
    placed = produce(broker.bootstrap_servers, stream)
    expected = Expectation.of(stream, placed)
    rows = lambda: scalar(database_url, "select count(*) from feedback_results")  # noqa: E731
    committed = lambda: sum(v or 0 for v in committed_offsets(broker.bootstrap_servers).values())  # noqa: E731

    worker = start_worker(TRIAGE_RETRY_MAX_BACKOFF_S="2", **FAST_BATCHES)
    wait_until(lambda: rows() >= 300, 120, "progress before the outage")
    set_database_reachable(postgres_server_url, database_url, False)
    try:
        held = hold_outage(worker, committed, "the database refusing connections", long_s=outage_s)
    finally:
        set_database_reachable(postgres_server_url, database_url, True)
    drain_and_stop(worker, database_url, expected, 240, "catching up after the outage")
    assert "store_retry" in worker.logs()
    verify("postgres_outage", broker.bootstrap_servers, database_url, expected, outage_s=held, restarts=0)


def test_broker_outage_reconnects_without_skipping_offsets(
    proxied_broker: tuple[LocalBroker, TcpProxy],
    database_url: str,
    worker_env: dict[str, str],
    tmp_path: Path,
    long_run: bool,
) -> None:
    broker, proxy = proxied_broker
    n, outage_s = (10_000, 45) if long_run else (3_000, 0)
    stream = make_stream(n, 30)
    placed = produce(broker.bootstrap_servers, stream)
    expected = Expectation.of(stream, placed)
    rows = lambda: scalar(database_url, "select count(*) from feedback_results")  # noqa: E731

    env = {**worker_env, "TRIAGE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, **FAST_BATCHES}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: rows() >= 300, 120, "progress before the outage")
        proxy.cut()
        held = hold_broker_outage(worker, env, long_s=outage_s)
        proxy.restore()
        drain_and_stop(worker, database_url, expected, 300, "catching up after the outage")
        verify("broker_outage", broker.bootstrap_servers, database_url, expected, outage_s=held, restarts=0)
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
