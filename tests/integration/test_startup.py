"""Start-up that answers: a database behind the migrations refuses to start with one line; an
unreachable broker is waited for, one log line per try, with /readyz saying why, until SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.services import WorkerProcess, produce, scalar, wait_until
from worker.devtools.local_services import LocalBroker, free_port
from worker.ops import migrate

pytestmark = pytest.mark.integration


@pytest.fixture
def bare_database(postgres_server_url: str) -> Iterator[str]:
    """A database nobody migrated."""
    name = f"triage_bare_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'create database "{name}"'))
    yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'drop database if exists "{name}" with (force)'))
    admin.dispose()


def run_worker(env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "run"], env=env, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.mark.parametrize("revision", [None, "0001"])
def test_a_schema_behind_the_migrations_refuses_to_start(
    bare_database: str, worker_env: dict[str, str], revision: str | None
) -> None:
    if revision:
        migrate.upgrade(bare_database, revision)
    started = time.monotonic()
    done = run_worker({**worker_env, "TRIAGE_DATABASE_URL": bare_database})
    assert done.returncode == 2, done.stderr[-3000:]
    assert time.monotonic() - started < 30
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("triage-worker: the database schema is at ") and "run `triage-worker migrate`" in last
    assert ("0001" if revision else "never migrated") in last
    assert "Traceback" not in done.stderr and "relay_failed" not in done.stderr


def test_an_unreachable_broker_is_waited_for_and_readyz_says_why(worker_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = {**worker_env, "TRIAGE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "TRIAGE_METRICS_PORT": str(port)}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: worker.logs().count('"waiting_for_broker"') >= 2, 60, "two tries to reach the broker")
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert answer.value.code == 503
        assert json.loads(answer.value.read())["checks"] == {
            "database": True,
            "schema": True,
            "broker": False,
            "model": True,
            "dead_letter_guard": True,
        }
        asked = time.monotonic()
        assert worker.stop(timeout_s=20) == 0
        assert time.monotonic() - asked < 10
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
    logs = worker.logs()
    assert "Traceback" not in logs
    waits = [json.loads(line) for line in logs.splitlines() if '"waiting_for_broker"' in line]
    assert all("NoBrokersAvailable" in w["error"] or "KafkaTimeoutError" in w["error"] for w in waits), waits


def test_secrets_from_mounted_files_and_a_static_member_id(
    broker: LocalBroker, database_url: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """The database URL (with its password) from a file in TRIAGE_SECRETS_DIR, as Kubernetes mounts a
    Secret, and static group membership (TRIAGE_KAFKA_GROUP_INSTANCE_ID) against the real broker."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "TRIAGE_DATABASE_URL").write_text(database_url)
    produce(broker.bootstrap_servers, [(None, json.dumps({"text": f"static member {i}"}).encode()) for i in range(10)])
    env = {k: v for k, v in worker_env.items() if k != "TRIAGE_DATABASE_URL"}
    env |= {"TRIAGE_SECRETS_DIR": str(secrets), "TRIAGE_KAFKA_GROUP_INSTANCE_ID": "triage-worker-0"}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: scalar(database_url, "select count(*) from feedback_results") == 10, 90, "stored")
    finally:
        assert worker.stop() == 0, worker.logs()[-2000:]
