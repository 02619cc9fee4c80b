"""Hostile payloads: every way a producer can get an event wrong, generated from a seed."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

Record = tuple[bytes | None, bytes]


def _deep(rng: random.Random) -> bytes:
    depth = rng.choice([50, 1_000, 100_000])
    return b'{"text": "deep", "metadata": ' + b"[" * depth + b"]" * depth + b"}"


def _wrong_types(rng: random.Random) -> bytes:
    field = rng.choice(["text", "event_id", "source", "product", "customer_id", "created_at", "metadata"])
    value = rng.choice([None, 0, 1.5, True, [], {}, ["a"], {"a": 1}, "", "x" * 300])
    payload = {"text": "fine text", field: value}
    return json.dumps(payload).encode()


def _control_chars(rng: random.Random) -> bytes:
    chars = "".join(chr(rng.choice([0, 1, 7, 8, 27, 127, 0x85, 0x2028, 0xFEFF])) for _ in range(rng.randint(1, 8)))
    return json.dumps({"text": f"ctrl{chars}end"}).encode()


def _unicode(rng: random.Random) -> bytes:
    text = rng.choice(["😀 great app", "très bien", "ужасно", "非常好", "\u202eRTL override", "a\u0301ccent"])
    return json.dumps({"text": text}, ensure_ascii=rng.random() < 0.5).encode()


GENERATORS: list[Callable[[random.Random], bytes]] = [
    lambda r: bytes(r.getrandbits(8) for _ in range(r.randint(0, 64))),  # random bytes
    lambda r: b'{"text": "' + bytes([0xC3, 0x28, 0xA0, 0xA1, 0xF0, 0x28]) + b'"}',  # invalid UTF-8
    lambda r: r.choice([b"[]", b"null", b"1", b'"s"', b"true", b"[{}]", b"{", b"}", b'{"text":}', b"{'text': 'x'}"]),
    _wrong_types,
    lambda r: json.dumps({"text": r.choice(["", " ", "\n\t ", "\u00a0", "\u3000"])}).encode(),  # empty/blank
    _control_chars,
    _deep,
    lambda r: json.dumps({"text": "lone \ud800 surrogate"}).encode(),
    lambda r: json.dumps({"text": "x" * r.choice([20_001, 50_000])}).encode(),  # over the text limit
    lambda r: json.dumps(
        {"text": "ok", "created_at": r.choice(["2026-13-01T00:00:00Z", "now", "2026-11-20"])}
    ).encode(),
    _unicode,
    lambda r: json.dumps({"text": f"valid feedback {r.random()}", "source": "survey"}).encode(),
]


def hostile_stream(count: int, seed: int = 4, *, with_huge: bool = True) -> list[Record]:
    """`count` payloads of every kind, duplicate ids with different texts among them."""
    rng = random.Random(seed)
    records: list[Record] = []
    for i in range(count):
        if i % 10 == 9:  # the same event id again with another text: the first one must win
            event_id = f"dup-{i // 100}"
            records.append((event_id.encode(), json.dumps({"event_id": event_id, "text": f"take {i}"}).encode()))
        else:
            records.append((None, GENERATORS[i % len(GENERATORS)](rng)))
    if with_huge:
        records.append((b"huge", json.dumps({"text": "h" * (10 * 1024 * 1024)}).encode()))  # 10 MB
    return records
