"""Fault-suite harness: build a stream, then check every guarantee and report the figures.

`verify()` compares what the system holds after a fault run with what was produced:
rows expected vs found (missing, unexpected, duplicated), escalations missing or repeated,
dead letters expected vs found, and committed offsets vs the end of the stream. Each run appends
one JSON line to $TRIAGE_FAULT_REPORT (when set), which the closing notes' tables are made from.
"""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, text

from tests.checkpoints import CORPUS
from tests.services import (
    DEAD_LETTERS,
    ESCALATIONS,
    INPUT,
    WorkerProcess,
    committed_offsets,
    next_offsets,
    scalar,
    wait_until,
)
from worker.contracts.values import FeedbackItem, RawRecord
from worker.devtools.local_services import free_port, read_topic
from worker.runtime.decode import Decoder

Record = tuple[bytes | None, bytes]


def make_stream(n_valid: int, n_malformed: int, tag: str = "") -> list[Record]:
    """Valid events (two thirds with an event_id as key, one third without) and malformed ones mixed in."""
    malformed = [b"not json", b"\xff\xfe", b"[]", b'{"text": 3}', b'{"text": " "}', b'{"no": "text"}']
    stream: list[Record] = []
    every = max(n_valid // max(n_malformed, 1), 1)
    inserted = 0
    for i in range(n_valid):
        payload: dict[str, Any] = {"text": f"{CORPUS[i % len(CORPUS)]} #{tag}{i}", "product": f"p{i % 5}"}
        if i % 3:
            payload["event_id"] = f"{tag}e{i}"
        stream.append((payload.get("event_id", "").encode() or None, json.dumps(payload).encode()))
        if inserted < n_malformed and i % every == every - 1:
            stream.append((b"bad", malformed[inserted % len(malformed)]))
            inserted += 1
    return stream


@dataclass
class Expectation:
    """What must end up where, derived from the produced records with the worker's own rules."""

    ids: dict[str, bytes] = field(default_factory=dict)  # event_id -> value of the first occurrence
    dead: Counter[tuple[int, int]] = field(default_factory=Counter)  # (partition, offset) of malformed
    placed: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def of(cls, records: list[Record], placed: list[tuple[int, int]], max_text_chars: int = 20_000) -> Expectation:
        decoder = Decoder(max_text_chars=max_text_chars)
        expectation = cls(placed=placed)
        ordered = sorted(zip(placed, records, strict=True))  # offset order within each partition
        for (partition, offset), (key, value) in ordered:
            decoded = decoder.decode(RawRecord(INPUT, partition, offset, key, value))
            if isinstance(decoded, FeedbackItem):
                expectation.ids.setdefault(decoded.event_id, value)
            else:
                expectation.dead[(partition, offset)] += 1
        return expectation


def verify(
    run: str,
    bootstrap: str,
    database_url: str,
    expected: Expectation,
    client_config: dict[str, Any] | None = None,
    results_topic: str | None = None,
    **figures: Any,
) -> dict[str, Any]:
    client_config = client_config or {}
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("select event_id, escalated, text from feedback_results")).all()
        unpublished = connection.execute(
            text("select count(*) from escalation_outbox where published_at is null")
        ).scalar_one()
    engine.dispose()
    found = Counter(r.event_id for r in rows)
    escalated = {r.event_id for r in rows if r.escalated}
    published = Counter(m.key.decode() for m in read_topic(bootstrap, ESCALATIONS, **client_config))
    dead = Counter(
        (int(h["triage.source.partition"]), int(h["triage.source.offset"]))
        for h in ({k: v.decode() for k, v in m.headers} for m in read_topic(bootstrap, DEAD_LETTERS, **client_config))
    )
    first_wins = sum(
        1 for r in rows if r.event_id in expected.ids and json.loads(expected.ids[r.event_id]).get("text") != r.text
    )
    report = {
        "run": run,
        **figures,
        "events": len(expected.placed),
        "rows_expected": len(expected.ids),
        "rows_found": len(rows),
        "rows_missing": len(set(expected.ids) - set(found)),
        "rows_unexpected": len(set(found) - set(expected.ids)),
        "rows_duplicated": sum(c - 1 for c in found.values()),
        "first_wins_violations": first_wins,
        "escalated_rows": len(escalated),
        "escalations_missing": len(escalated - set(published)),
        "escalation_repeats": sum(c - 1 for c in published.values()),
        "outbox_unpublished": unpublished,
        **(_results_figures(bootstrap, results_topic, found, client_config) if results_topic else {}),
        "dead_letters_expected": sum(expected.dead.values()),
        "dead_letters_found": len(set(dead) & set(expected.dead)),
        "dead_letter_repeats": sum(c - 1 for c in dead.values()),
        "dead_letters_unexpected": len(set(dead) - set(expected.dead)),
        "offsets_committed_to_end": committed_offsets(bootstrap, **client_config) == next_offsets(expected.placed),
    }
    path = os.environ.get("TRIAGE_FAULT_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(report) + "\n")
    print("fault-run", json.dumps(report))
    assert report["rows_missing"] == report["rows_unexpected"] == report["rows_duplicated"] == 0, report
    assert report["rows_found"] == report["rows_expected"], report
    assert report["first_wins_violations"] == 0, report
    assert report["escalations_missing"] == 0 and report["outbox_unpublished"] == 0, report
    assert report.get("results_missing", 0) == report.get("results_unexpected", 0) == 0, report
    assert report["dead_letters_found"] == report["dead_letters_expected"], report
    assert report["dead_letters_unexpected"] == 0, report
    assert report["offsets_committed_to_end"], report
    return report


def _results_figures(bootstrap: str, topic: str, stored: Counter[str], client_config: dict[str, Any]) -> dict[str, int]:
    """Every stored row must reach the results topic (at least once; repeats are counted)."""
    published = Counter(m.key.decode() for m in read_topic(bootstrap, topic, **client_config))
    return {
        "results_published": len(published),
        "results_missing": len(set(stored) - set(published)),
        "results_unexpected": len(set(published) - set(stored)),
        "result_repeats": sum(c - 1 for c in published.values()),
    }


def assert_committed_only_handled(bootstrap: str, database_url: str, expected: Expectation) -> None:
    """Nothing committed beyond what is stored or dead-lettered: every offset under a partition's
    committed one is a stored row or a dead letter."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = set(map(tuple, connection.execute(text("select kafka_partition, kafka_offset from feedback_results"))))
    engine.dispose()
    handled = stored | set(expected.dead)
    for partition, committed in committed_offsets(bootstrap).items():
        assert all((partition, offset) in handled for offset in range(committed or 0)), partition


def drain_and_stop(
    worker: WorkerProcess,
    database_url: str,
    expected: Expectation,
    timeout_s: float,
    what: str,
    client_config: dict[str, Any] | None = None,
) -> None:
    """Wait for every expected row, an empty outbox and the offsets committed to the end of the
    stream (the last batch's dead letters and commit land after its rows), then SIGTERM the worker
    and require a clean exit."""
    wait_until(
        lambda: scalar(database_url, "select count(*) from feedback_results") >= len(expected.ids), timeout_s, what
    )
    wait_until(
        lambda: scalar(database_url, "select count(*) from escalation_outbox where published_at is null") == 0,
        60,
        "outbox relayed",
    )
    bootstrap, end = worker.env["TRIAGE_KAFKA_BOOTSTRAP_SERVERS"], next_offsets(expected.placed)
    wait_until(
        lambda: committed_offsets(bootstrap, **(client_config or {})) == end,
        60,
        "offsets committed to the end of the stream",
    )
    assert worker.stop() == 0, worker.logs()[-2000:]


class TcpProxy:
    """A loopback TCP proxy in front of the broker that a test can cut and restore.

    With `tls`, it terminates TLS: clients must complete a verified handshake to reach the broker.
    """

    def __init__(self, target_port: int, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.target_port = target_port
        self.corrupt_marker: bytes | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Close the port and every open connection: clients see the broker vanish."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
            listener, self._listener = self._listener, None
        for sock in [s for s in [listener] if s] + sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(listener, client), daemon=True).start()

    def _connect(self, listener: socket.socket, client: socket.socket) -> None:
        try:
            if self.tls:
                client = self.tls.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:  # includes a failed TLS handshake
            client.close()
            return
        with self._lock:
            if self._listener is not listener:  # cut while connecting
                client.close()
                upstream.close()
                return
            self._sockets += [client, upstream]
        self._pump(client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy bytes both ways from one thread (an SSL socket must not be used from two at once).

        With `corrupt_marker` set, the bytes from the broker that contain it have its last byte
        changed, so the record batch carrying it arrives with a CRC that does not match.
        """
        peers = {client: upstream, upstream: client}
        try:
            while True:
                pending = isinstance(client, ssl.SSLSocket) and client.pending()
                ready = [client] if pending else select.select(list(peers), [], [], 1.0)[0]
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    marker = self.corrupt_marker
                    if marker and sock is upstream and marker in data:
                        data = data.replace(marker, marker[:-1] + b"#")
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for sock in peers:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


class SaslPlainProxy(TcpProxy):
    """A proxy that requires SASL/PLAIN before it lets a client reach the broker.

    It plays the broker's side of the SASL exchange itself (Tansu 0.6 as shipped here cannot):
    ApiVersions is forwarded, SaslHandshake and SaslAuthenticate (v0-v2) are answered from
    `users`, and any other request before a successful authentication closes the connection.
    """

    HANDSHAKE, AUTHENTICATE, API_VERSIONS = 17, 36, 18
    UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58

    def __init__(self, target_port: int, users: dict[str, str], port: int | None = None) -> None:
        self.users = users
        self.failed_logins = 0
        super().__init__(target_port, port=port)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            authenticated = self._authenticate(client, upstream)
        except (OSError, ValueError):
            authenticated = False
        if authenticated:
            super()._pump(client, upstream)
        else:
            for sock in (client, upstream):
                sock.close()

    def _authenticate(self, client: socket.socket, upstream: socket.socket) -> bool:
        while True:
            frame = _read_frame(client)
            api_key, version, correlation_id = struct.unpack(">hhi", frame[:8])
            if api_key == self.API_VERSIONS:
                upstream.sendall(struct.pack(">i", len(frame)) + frame)
                response = _read_frame(upstream)
                client.sendall(struct.pack(">i", len(response)) + response)
                continue
            flexible = api_key == self.AUTHENTICATE and version >= 2
            body = _skip_request_header(frame, flexible)
            if api_key == self.HANDSHAKE:
                (length,) = struct.unpack(">h", body[:2])
                mechanism = body[2 : 2 + length].decode()
                error = 0 if mechanism == "PLAIN" else self.UNSUPPORTED_SASL_MECHANISM
                _send(client, struct.pack(">ih", correlation_id, error) + struct.pack(">i", 1) + _string(b"PLAIN"))
                if error:
                    return False
            elif api_key == self.AUTHENTICATE:
                if flexible:
                    length, offset = _uvarint(body, 0)
                    token = body[offset : offset + length - 1]
                else:
                    (length,) = struct.unpack(">i", body[:4])
                    token = body[4 : 4 + length]
                _, user, password = token.decode("utf-8").split("\x00")
                ok = self.users.get(user) == password
                self.failed_logins += not ok
                error = 0 if ok else self.SASL_AUTHENTICATION_FAILED
                message = None if ok else b"authentication failed"
                if flexible:  # response header v1 (tagged fields) and compact fields
                    payload = struct.pack(">ib", correlation_id, 0) + struct.pack(">h", error)
                    payload += bytes([len(message) + 1]) + message if message else b"\x00"
                    payload += b"\x01" + struct.pack(">q", 0) + b"\x00"
                else:
                    payload = struct.pack(">ih", correlation_id, error) + _string(message)
                    payload += struct.pack(">i", 0) + (struct.pack(">q", 0) if version >= 1 else b"")
                _send(client, payload)
                return ok
            else:
                return False  # the broker requires authentication first


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("connection closed")
        data += chunk
    return data


def _read_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", _read_exactly(sock, 4))
    return _read_exactly(sock, size)


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">i", len(payload)) + payload)


def _string(value: bytes | None) -> bytes:
    return struct.pack(">h", -1) if value is None else struct.pack(">h", len(value)) + value


def _uvarint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def _skip_request_header(frame: bytes, flexible: bool) -> bytes:
    """The request body: after api key, version, correlation id, client id (and tagged fields)."""
    (client_id_length,) = struct.unpack(">h", frame[8:10])
    offset = 10 + max(client_id_length, 0)
    if flexible:
        count, offset = _uvarint(frame, offset)
        for _ in range(count):
            _, offset = _uvarint(frame, offset)
            size, offset = _uvarint(frame, offset)
            offset += size
    return frame[offset:]
