"""The Schema Registry check: a real HTTP server answering as a registry does, and the decoder using it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.contracts.values import FeedbackItem, RawRecord, Rejection
from worker.runtime.decode import Decoder
from worker.runtime.kafka.registry import UNKNOWN_TTL_S, SchemaRegistry


@pytest.fixture
def registry_url() -> Iterator[tuple[str, list[str]]]:
    asked: list[str] = []

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            asked.append(self.path)
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
