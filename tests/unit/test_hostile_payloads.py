"""Hostile payloads against the decoder alone: it never raises, and every payload becomes a valid
event or a rejection with a reason and its original bytes. (The same stream through a running
worker is fault 5, tests/faults/test_hostile_input.py; these cases need no service, so they run
with the unit tests.)"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.hostile import hostile_stream
from worker.contracts.errors import ErrorClass
from worker.contracts.values import FeedbackItem, RawRecord, Rejection
from worker.runtime.decode import Decoder

decoder = Decoder(max_text_chars=20_000)


def check(value: bytes) -> None:
    result = decoder.decode(RawRecord("feedback.events", 0, 1, None, value))
    if isinstance(result, Rejection):
        assert isinstance(result.error_class, ErrorClass) and result.message
        assert result.record.value == value
    else:
        assert isinstance(result, FeedbackItem)
        assert result.text.strip() and "\x00" not in result.text
        result.text.encode("utf-8")  # storable


def test_ten_thousand_generated_payloads_never_break_the_decoder() -> None:
    stream = hostile_stream(10_000, with_huge=True)
    for _, value in stream:
        check(value)
    classes = {
        r.error_class for _, v in stream if isinstance(r := decoder.decode(RawRecord("t", 0, 0, None, v)), Rejection)
    }
    assert classes >= {
        "invalid_utf8",
        "invalid_json",
        "not_an_object",
        "invalid_event",
        "empty_text",
        "text_too_long",
        "invalid_text",
        "value_too_large",
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {"text": json_values | st.text()},
    optional={k: json_values for k in ("event_id", "source", "product", "customer_id", "created_at", "metadata")},
)


@settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=256)
    | json_values.map(lambda v: json.dumps(v).encode())
    | event_like.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))
)
def test_property_any_bytes_decode_or_reject(value: bytes) -> None:
    check(value)
