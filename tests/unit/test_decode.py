import json

import pytest

from worker.contracts.values import FeedbackItem, RawRecord, Rejection
from worker.runtime.decode import Decoder


def record(value: bytes | None, offset: int = 7) -> RawRecord:
    return RawRecord(topic="feedback.events", partition=2, offset=offset, key=b"k", value=value)


decoder = Decoder(max_text_chars=100, max_value_bytes=10_000)


def test_valid_event_with_every_field() -> None:
    payload = {
        "event_id": "e-1",
        "text": "Great app",
        "source": "survey",
        "product": "mobile",
        "customer_id": "c-9",
        "created_at": "2026-11-20T10:00:00+01:00",
        "metadata": {"a": [1, 2]},
        "unknown_field": "ignored",
    }
    item = decoder.decode(record(json.dumps(payload).encode()))
    assert isinstance(item, FeedbackItem)
    assert (item.event_id, item.text, item.source, item.product, item.customer_id) == (
        "e-1",
        "Great app",
        "survey",
        "mobile",
        "c-9",
    )
    assert item.created_at is not None and item.created_at.utcoffset() is not None
    assert item.created_at.isoformat() == "2026-11-20T10:00:00+01:00"
    assert item.metadata == {"a": [1, 2]}


def test_missing_event_id_uses_where_the_record_sits_and_a_digest_of_its_bytes() -> None:
    item = decoder.decode(record(b'{"text": "hello"}', offset=42))
    assert isinstance(item, FeedbackItem)
    assert item.event_id.startswith("feedback.events:2:42:") and len(item.event_id.rsplit(":", 1)[1]) == 16
    replayed = decoder.decode(record(b'{"text": "hello"}', offset=42))
    recreated = decoder.decode(record(b'{"text": "another event"}', offset=42))  # the topic was recreated
    assert isinstance(replayed, FeedbackItem) and isinstance(recreated, FeedbackItem)
    assert replayed.event_id == item.event_id and recreated.event_id != item.event_id


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'{"text": "fine", "metadata": {"x": 1e400}}', "out of range"),  # json.loads gives inf; jsonb refuses it
        (b'{"text": "fine", "metadata": {"x": [-1e999]}}', "out of range"),
        (b'{"text": "fine", "created_at": "2026-11-25T10:00:00+20:00"}', "beyond PostgreSQL"),
    ],
)
def test_values_postgres_cannot_store_are_rejected_at_decode(payload: bytes, why: str) -> None:
    rejected = decoder.decode(record(payload))
    assert isinstance(rejected, Rejection) and why in rejected.message


def test_a_kafka_timestamp_no_datetime_holds_keeps_its_event() -> None:
    microseconds = RawRecord("feedback.events", 0, 1, None, b'{"text": "fine"}', timestamp_ms=1_764_000_000_000_000)
    item = decoder.decode(microseconds)
    assert isinstance(item, FeedbackItem) and item.kafka_time is None
    normal = decoder.decode(
        RawRecord("feedback.events", 0, 1, None, b'{"text": "fine"}', timestamp_ms=1_764_000_000_000)
    )
    assert isinstance(normal, FeedbackItem) and normal.kafka_time is not None and normal.kafka_time.year == 2025


@pytest.mark.parametrize(
    ("value", "error_class"),
    [
        (None, "missing_value"),
        (b"\xff\xfe not utf8", "invalid_utf8"),
        (b"not json", "invalid_json"),
        (b"", "invalid_json"),
        (b'{"text": "unterminated', "invalid_json"),
        (b'{"text": "ok", "metadata": {"x": NaN}}', "invalid_json"),  # Python reads it, JSONB would not
        (b'{"text": "ok", "metadata": {"x": -Infinity}}', "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (b"null", "not_an_object"),
        (b"{}", "invalid_event"),
        (b'{"text": 5}', "invalid_event"),
        (b'{"text": null}', "invalid_event"),
        (b'{"text": ["a"]}', "invalid_event"),
        (b'{"text": ""}', "invalid_event"),
        (b'{"text": "   \\n\\t "}', "empty_text"),
        (b'{"text": "ok", "event_id": 12}', "invalid_event"),
        (b'{"text": "ok", "event_id": ""}', "invalid_event"),
        (b'{"text": "ok", "created_at": "yesterday"}', "invalid_event"),
        (b'{"text": "ok", "created_at": "2026-11-20T10:00:00"}', "invalid_event"),  # no offset: not RFC 3339
        (b'{"text": "ok", "metadata": [1]}', "invalid_event"),
        (b'{"text": "ok", "product": {"a": 1}}', "invalid_event"),
        (b'{"text": "nul \\u0000 inside"}', "invalid_text"),
        (b'{"text": "ok", "metadata": {"k": "\\u0000"}}', "invalid_text"),
        (b'{"text": "lone \\ud800 surrogate"}', "invalid_text"),
        ('{"text": "%s"}' % ("x" * 101), "text_too_long"),
        (b"[" * 100_000 + b"]" * 100_000, "value_too_large"),
    ],
)
def test_rejections_name_the_reason(value: bytes | str | None, error_class: str) -> None:
    raw = value.encode() if isinstance(value, str) else value
    result = decoder.decode(record(raw))
    assert isinstance(result, Rejection), result
    assert result.error_class == error_class
    assert result.message
    assert result.record.value == raw  # the original bytes travel unchanged


def test_deeply_nested_json_is_rejected_not_raised() -> None:
    deep = Decoder(max_text_chars=100, max_value_bytes=10_000_000)
    result = deep.decode(record(b'{"text": "x", "metadata": ' + b'{"a": ' * 200_000 + b"1" + b"}" * 200_001))
    assert isinstance(result, Rejection)
    assert result.error_class == "invalid_json"


def test_literal_backslash_u0000_text_is_fine() -> None:
    item = decoder.decode(record(json.dumps({"text": "the escape \\u0000 as text"}).encode()))
    assert isinstance(item, FeedbackItem)


def test_rejection_messages_never_echo_the_text() -> None:
    secret = "my card number is 4111"
    result = decoder.decode(record(json.dumps({"text": secret, "created_at": secret}).encode()))
    assert isinstance(result, Rejection)
    assert "4111" not in result.message


def confluent_json_serializer() -> object:
    """confluent-kafka's own JSONSerializer, on its in-memory registry (a real registry cannot run here)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.json_schema import JSONSerializer

    from worker.contracts.wire import FeedbackEvent

    registry = SchemaRegistryClient.new_client({"url": "mock://decode-tests"})
    return JSONSerializer(json.dumps(FeedbackEvent.model_json_schema()), registry)


def test_values_in_the_schema_registry_wire_format_are_unframed_and_keep_their_schema_id() -> None:
    from confluent_kafka.serialization import MessageField, SerializationContext

    serialize = confluent_json_serializer()
    context = SerializationContext("feedback.events", MessageField.VALUE)
    value = serialize({"event_id": "framed-1", "text": "the app crashes"}, context)  # type: ignore[operator]
    assert value[:1] == b"\x00"  # the magic byte, then a 4-byte schema id
    decoded = decoder.decode(RawRecord("feedback.events", 0, 1, None, value))
    assert isinstance(decoded, FeedbackItem)
    assert (decoded.event_id, decoded.text, decoded.schema_id) == (
        "framed-1",
        "the app crashes",
        int.from_bytes(value[1:5], "big"),
    )
    plain = decoder.decode(RawRecord("feedback.events", 0, 2, None, b'{"text": "plain"}'))
    assert isinstance(plain, FeedbackItem) and plain.schema_id is None


@pytest.mark.parametrize(
    ("value", "error_class"),
    [
        (b"\x00\x00\x01", "invalid_json"),  # a frame cut short
        (b"\x00\x00\x00\x00\x07not json", "invalid_json"),
        (b"\x00\x00\x00\x00\x07" + json.dumps({"no_text": 1}).encode(), "invalid_event"),  # framed, still not an event
    ],
)
def test_a_framed_value_that_is_not_a_feedback_event_is_still_dead_lettered(value: bytes, error_class: str) -> None:
    rejected = decoder.decode(RawRecord("feedback.events", 0, 1, None, value))
    assert isinstance(rejected, Rejection) and rejected.error_class == error_class


TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_passthrough_headers_are_kept_by_name_in_any_case_and_only_as_utf8() -> None:
    passing = Decoder(max_text_chars=100, passthrough_headers=("traceparent", "X-Correlation-Id"))
    headers = (("TraceParent", TRACEPARENT), ("x-correlation-id", b"\xff\xfe"), ("other", b"no"))
    item = passing.decode(RawRecord("t", 0, 1, None, b'{"text": "hi"}', headers=headers))
    assert isinstance(item, FeedbackItem) and item.headers == {"TraceParent": TRACEPARENT.decode()}
    assert decoder.decode(RawRecord("t", 0, 1, None, b'{"text": "hi"}', headers=headers)).headers is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        # A NUL is valid UTF-8, but PostgreSQL's JSONB refuses it: the header is left out, never the event.
        ((("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\x00"),), None),
        ((("traceparent", b"not-a-trace-context"),), None),  # not the W3C form
        ((("tracestate", b"k=" + b"v" * 600),), None),  # over the 512 characters W3C allows
        ((("x-correlation-id", b"abc\x07"),), None),  # a control character
        # Two spellings of one name: the first wins, once.
        (
            (("traceparent", TRACEPARENT), ("TRACEPARENT", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")),
            {"traceparent": TRACEPARENT.decode()},
        ),
    ],
)
def test_passthrough_values_are_what_the_store_and_the_w3c_format_accept(
    headers: tuple[tuple[str, bytes], ...], kept: dict[str, str] | None
) -> None:
    passing = Decoder(max_text_chars=100, passthrough_headers=("traceparent", "tracestate", "x-correlation-id"))
    item = passing.decode(RawRecord("t", 0, 1, None, b'{"text": "hi"}', headers=headers))
    assert isinstance(item, FeedbackItem) and item.headers == kept


def test_a_schema_id_beyond_32_bits_is_refused_at_decode() -> None:
    framed = b"\x00" + (2**31).to_bytes(4, "big") + b'{"text": "hi"}'
    rejected = decoder.decode(RawRecord("t", 0, 1, None, framed))
    assert isinstance(rejected, Rejection) and rejected.error_class == "unknown_schema"
    largest = b"\x00" + (2**31 - 1).to_bytes(4, "big") + b'{"text": "hi"}'
    taken = decoder.decode(RawRecord("t", 0, 1, None, largest))
    assert isinstance(taken, FeedbackItem) and taken.schema_id == 2**31 - 1


def test_a_replayed_record_keeps_the_id_of_its_first_place() -> None:
    value = b'{"text": "no id of its own"}'
    first = decoder.decode(RawRecord("feedback.events", 2, 40, b"k", value))
    replayed = decoder.decode(
        RawRecord("feedback.events", 0, 9_000, b"k", value, headers=(("triage.origin", b"feedback.events:2:40"),))
    )
    again = decoder.decode(
        RawRecord("feedback.events", 1, 12_345, b"k", value, headers=(("triage.origin", b"feedback.events:2:40"),))
    )
    assert isinstance(first, FeedbackItem) and isinstance(replayed, FeedbackItem) and isinstance(again, FeedbackItem)
    assert first.event_id == replayed.event_id == again.event_id
    forged = decoder.decode(RawRecord("feedback.events", 0, 7, b"k", value, headers=(("triage.origin", b"x y"),)))
    assert isinstance(forged, FeedbackItem) and forged.event_id.startswith("feedback.events:0:7:")  # not an origin
