"""The Schema Registry check: a real HTTP server answering as a registry does, and the decoder using it."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.contracts.values import FeedbackItem, RawRecord, Rejection
from worker.runtime.decode import Decoder
from worker.runtime.kafka.registry import UNKNOWN_TTL_S, SchemaRegistry

authorizations: list[str | None] = []


@pytest.fixture
def registry_url() -> Iterator[tuple[str, list[str]]]:
    asked: list[str] = []
    authorizations.clear()

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            asked.append(self.path)
            authorizations.append(self.headers.get("Authorization"))
            status = {"/schemas/ids/1": 200, "/schemas/ids/2": 404}.get(self.path, 500)
            body = json.dumps({"schema": "{}"} if status == 200 else {"error_code": 40403}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", asked
    server.shutdown()
    server.server_close()


def test_known_ids_pass_unknown_ones_do_not_and_the_answers_are_kept(registry_url: tuple[str, list[str]]) -> None:
    url, asked = registry_url
    now = [0.0]
    registry = SchemaRegistry(url, clock=lambda: now[0])
    assert registry.knows(1) and registry.knows(1)
    assert not registry.knows(2) and not registry.knows(2)
    assert asked == ["/schemas/ids/1", "/schemas/ids/2"]  # each asked once
    now[0] += UNKNOWN_TTL_S + 1
    assert not registry.knows(2) and len(asked) == 3  # an unknown id is asked about again after a while
    assert registry.knows(3)  # the registry failing (500) refuses nothing


def test_an_unreachable_registry_refuses_nothing() -> None:
    assert SchemaRegistry("http://127.0.0.1:9/").knows(7)


def test_the_decoder_dead_letters_a_schema_id_the_registry_does_not_know(registry_url: tuple[str, list[str]]) -> None:
    decoder = Decoder(100, schema_known=SchemaRegistry(registry_url[0]).knows)
    event = json.dumps({"text": "framed"}).encode()
    known = decoder.decode(RawRecord("t", 0, 1, None, b"\x00\x00\x00\x00\x01" + event))
    assert isinstance(known, FeedbackItem) and known.schema_id == 1
    unknown = decoder.decode(RawRecord("t", 0, 2, None, b"\x00\x00\x00\x00\x02" + event))
    assert isinstance(unknown, Rejection) and unknown.error_class == "unknown_schema"
    assert "schema id 2 is not in the Schema Registry" in unknown.message


def test_credentials_in_the_url_go_in_a_header_never_in_the_url_or_a_log(
    registry_url: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL with credentials and no port once crashed the worker at every restart (`nonnumeric port:
    'S3cretPass@registry...'`), printing the password; with a port, the check silently never ran."""
    url, asked = registry_url
    host = url.removeprefix("http://")
    registry = SchemaRegistry(f"http://svc-triage:S3cret%40Pass@{host}")
    assert registry.knows(1) and not registry.knows(2)
    assert asked == ["/schemas/ids/1", "/schemas/ids/2"] and "S3cret" not in registry.url
    assert authorizations == ["Basic " + base64.b64encode(b"svc-triage:S3cret@Pass").decode()] * 2
    with_auth = SchemaRegistry(url, auth="reader:other-secret")
    assert with_auth.knows(1) and authorizations[-1] == "Basic " + base64.b64encode(b"reader:other-secret").decode()
    SchemaRegistry("http://svc:S3cretPass@127.0.0.1:9").knows(5)  # unreachable: warned, without the password
    assert "S3cretPass" not in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["http://svc:S3cretPass@registry.example.com:port/", "ftp://registry", "registry:8081"])
def test_a_registry_url_the_worker_cannot_use_is_refused_at_start_without_quoting_it(bad: str) -> None:
    from worker.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="TRIAGE_SCHEMA_REGISTRY_URL") as said:  # as load_settings says it
        Settings().with_overrides(schema_registry_url=bad)
    assert "S3cretPass" not in str(said.value)


def test_a_hung_registry_costs_one_timeout_not_one_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """3 records with one id took 9.0 s against a registry that never answered."""
    import socket

    from worker.runtime.kafka import registry as module

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections, answers nothing: a hung registry
    monkeypatch.setattr(module, "TIMEOUT_S", 0.3)
    now = [0.0]
    hung = SchemaRegistry(f"http://127.0.0.1:{listener.getsockname()[1]}", clock=lambda: now[0])
    started = time.monotonic()
    assert all(hung.knows(i) for i in (7, 7, 8, 9))  # refuses nothing
    assert time.monotonic() - started < 0.3 * 2  # one timeout, then the failure is remembered
    now[0] += module.FAILURE_TTL_S + 1
    started = time.monotonic()
    assert hung.knows(7) and time.monotonic() - started >= 0.29  # asked again once the failure is old
    listener.close()


def test_the_caches_are_bounded(registry_url: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.runtime.kafka import registry as module

    monkeypatch.setattr(module, "CACHE_SIZE", 3)
    url, asked = registry_url
    registry = SchemaRegistry(url)
    for schema_id in (2, 4, 5, 6, 7):  # unknown (404) or failing (500): none may stay for ever
        registry.knows(schema_id)
    registry.failing_until = 0.0
    assert len(registry.unknown_until) <= 3 and len(registry.known) <= 3
