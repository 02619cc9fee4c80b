"""Fault 5: hostile input. The decoder never raises, and the worker routes every payload correctly."""

from __future__ import annotations

import json
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.conftest import FAST_BATCHES, GUARD_OFF
from tests.faults.harness import Expectation, drain_and_stop, verify
from tests.faults.hostile import hostile_stream
from tests.services import WorkerProcess, produce, scalar, wait_until
from worker.contracts.errors import ErrorClass
from worker.contracts.values import FeedbackItem, RawRecord, Rejection
from worker.devtools.local_services import LocalBroker
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


def test_hostile_stream_through_the_worker(
    broker: LocalBroker, database_url: str, start_worker: Callable[..., WorkerProcess], long_run: bool
) -> None:
    stream = hostile_stream(10_000 if long_run else 1_500, seed=11)
    placed = produce(broker.bootstrap_servers, stream, max_request_size=32 * 1024 * 1024)
    expected = Expectation.of(stream, placed)
    assert len(expected.ids) and sum(expected.dead.values())

    worker = start_worker(**FAST_BATCHES, **GUARD_OFF)
    wait_until(
        lambda: scalar(database_url, "select count(*) from feedback_results") >= len(expected.ids) // 2,
        240,
        "half the valid payloads stored",
    )
    assert worker.process.poll() is None, "the worker stopped on input"
    drain_and_stop(worker, database_url, expected, 240, "every valid payload stored")
    assert '"duplicate_events_skipped"' in worker.logs()
    verify(
        "hostile_input",
        broker.bootstrap_servers,
        database_url,
        expected,
        payloads=len(stream),
        largest_payload_bytes=max(len(v) for _, v in stream),
    )
