"""In-memory stand-ins for the runner's outside world: a source with partitions, offsets, pauses and
rebalances; a model; a store; a dead-letter sink. The stages and the runner around them are real,
so the loop's own logic (commit order, backpressure, revokes, shutdown) is tested in milliseconds.

The source, the store and the sink keep the promises of their ports (worker/runtime/ports.py): the
contract suites in tests/contracts/ run on them (tests/unit/test_contracts.py) exactly as on the real
parts (tests/integration/test_contracts.py).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from worker.contracts.inference import Answer, Inference, InferenceStats, Model
from worker.contracts.values import (
    ClassificationFailure,
    ClassifiedItem,
    Prediction,
    RawRecord,
    Refusal,
    Rejection,
    StoreOutcome,
)
from worker.runtime.batcher import MicroBatcher
from worker.runtime.decode import Decoder
from worker.runtime.guard import DeadLetterGuard
from worker.runtime.kafka.deadletter import dead_letter_headers
from worker.runtime.pipeline import Chain
from worker.runtime.ports import SourceClosed
from worker.runtime.retry import Backoff, Unavailable
from worker.runtime.runner import Runner
from worker.runtime.service.metrics import Metrics
from worker.runtime.shutdown import Shutdown
from worker.runtime.stages import DecodeStage, InferStage, StoreStage, TokenizeStage
from worker.runtime.triage import TriagePolicy

TOPIC = "feedback.events"


def event(event_id: str, text: str = "fine") -> bytes:
    return json.dumps({"event_id": event_id, "text": text}).encode()


class MemorySource:
    """A consumer of one topic whose partitions hold `values`; positions restart from the committed
    offsets after a rebalance, as a new owner's would. Like kafka-python's, the revoke callback runs
    on another thread (the client's network thread there) while the main thread waits inside `poll`."""

    def __init__(self, partitions: dict[int, list[bytes]]) -> None:
        self.records = {
            p: [RawRecord(TOPIC, p, offset, None, value, 1_000) for offset, value in enumerate(values)]
            for p, values in partitions.items()
        }
        self.position = dict.fromkeys(self.records, 0)
        self.committed: dict[int, int] = {}
        self.commits: list[tuple[str, dict[int, int]]] = []  # ("poll_loop" | "on_revoke", offsets) in order
        self.paused = False
        self.polls_while_paused = 0
        self.closed = False
        self.on_revoke: Callable[[], list[RawRecord]] | None = None
        self.revoke_thread: str | None = None  # the thread the last revoke callback ran on
        self.before_revoke: Callable[[], None] = lambda: None  # e.g. let a held store finish during the drain
        self._rebalance_requested = threading.Event()
        self.rebalanced = threading.Event()

    def subscribe(self, on_revoke: Callable[[], list[RawRecord]]) -> None:
        self._check_open()
        self.on_revoke = on_revoke

    def request_rebalance(self) -> None:
        """The next poll runs a rebalance: revoke (drain and commit what finished), then reassign."""
        self._rebalance_requested.set()

    def poll(self, timeout_ms: int, max_records: int) -> list[RawRecord]:
        self._check_open()
        if self._rebalance_requested.is_set():
            self._rebalance_requested.clear()
            revoke = threading.Thread(target=self._revoke, name="fake-kafka-network")
            revoke.start()
            revoke.join()
            self.position = {p: self.committed.get(p, 0) for p in self.records}
            self.paused = False
            self.rebalanced.set()
        if self.paused:
            self.polls_while_paused += 1
            time.sleep(0.001)
            return []
        polled: list[RawRecord] = []
        for p, records in self.records.items():
            take = records[self.position[p] : self.position[p] + max_records - len(polled)]
            self.position[p] += len(take)
            polled += take
        if not polled and timeout_ms:
            time.sleep(0.002)
        return polled

    def _revoke(self) -> None:
        assert self.on_revoke is not None
        self.revoke_thread = threading.current_thread().name
        self.before_revoke()
        self._commit(self.on_revoke(), "on_revoke")

    def commit(self, records: Iterable[RawRecord]) -> dict[str, int]:
        self._check_open()
        return {f"{TOPIC}:{p}": o for p, o in self._commit(records, "poll_loop").items()}

    def _commit(self, records: Iterable[RawRecord], how: str) -> dict[int, int]:
        offsets: dict[int, int] = {}
        for record in records:
            offsets[record.partition] = max(offsets.get(record.partition, 0), record.offset + 1)
        if offsets:
            self.committed.update(offsets)
            self.commits.append((how, offsets))
        return offsets

    def pause_all(self) -> None:
        self._check_open()
        self.paused = True

    def resume_all(self) -> None:
        self._check_open()
        self.paused = False

    def lag(self) -> dict[tuple[str, int], int]:
        self._check_open()
        return {(TOPIC, p): len(r) - self.position[p] for p, r in self.records.items()}

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise SourceClosed(f"the consumer of {TOPIC} is closed")

    def end_offsets(self) -> dict[int, int]:
        return {p: len(r) for p, r in self.records.items() if r}


class FakeModel:
    """'bad' in a text means negative, 'unsure' a low score, 'boom' a text the model cannot take.
    A `Model[list[str]]`: the same protocol the real classifier implements."""

    model_name = "fake-model"
    revision = "dir:fake00000000"
    calibration_id = None
    max_batch_size = 4

    def encode(self, texts: Sequence[str]) -> list[str]:
        return list(texts)

    def classify(self, encoded: list[str]) -> Inference:
        answers: list[Answer] = []
        for text in encoded:
            if "boom" in text:
                answers.append(ClassificationFailure("out of memory on fake"))
            elif "bad" in text:
                answers.append(Prediction("negative", 0.9, 0.9, "NEGATIVE"))
            else:
                score = 0.55 if "unsure" in text else 0.8
                answers.append(Prediction("positive", score, 1 - score, "POSITIVE"))
        tokens = sum(len(t) for t in encoded)
        return Inference(answers, InferenceStats(len(encoded), 1, tokens, tokens, inference_ms=1.0))


class MemoryStore:
    """Idempotent on event_id like the real store, and atomic per write. `outage` makes writes raise
    Unavailable, `gate` holds every write until it is set, and an event id in `fail_on` makes the
    write raise an unexpected error (a bug, which stops the pipeline). Like PostgreSQL, it refuses a
    value JSONB cannot hold (a non-finite number in the metadata): that item comes back refused."""

    def __init__(self) -> None:
        self.rows: dict[str, ClassifiedItem] = {}
        self.outage = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()  # set while a write is held at the gate
        self.fail_on: set[str] = set()
        self.attempts = 0

    def write(self, results: Sequence[ClassifiedItem]) -> StoreOutcome:
        self.attempts += 1
        self.waiting.set()
        self.gate.wait()
        self.waiting.clear()
        if self.outage.is_set():
            raise Unavailable("database: fake outage")
        if any(r.item.event_id in self.fail_on for r in results):
            raise ValueError("a bug in the store")
        inserted, escalations, audits, duplicates, refused = 0, 0, 0, [], []
        for result in results:
            if result.item.event_id in self.rows:
                duplicates.append(result.item.event_id)
            elif not _storable(result.item.metadata):
                item = result.item
                refused.append(Refusal(item.event_id, item.record, "22P02", "InvalidTextRepresentation", "Infinity"))
            else:
                self.rows[result.item.event_id] = result
                inserted += 1
                escalations += result.decision.escalate
                audits += result.decision.audit and not result.decision.escalate
        return StoreOutcome(inserted, escalations, tuple(duplicates), tuple(refused), audits)


def _storable(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_storable(v) for v in value.values())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


class MemoryDeadLetters:
    """A dead-letter topic in memory. `sent` holds the rejections the topic took, `messages` what it
    holds (key, value, headers) as the real sink writes them; `down` acknowledges nothing, and a value
    over `max_bytes` is refused as too large, as a broker's message size limit does."""

    def __init__(self, max_bytes: int = 1_048_576) -> None:
        self.sent: list[Rejection] = []
        self.messages: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.down = threading.Event()
        self.max_bytes = max_bytes
        self._pending: list[Rejection] = []

    def send(self, rejections: Iterable[Rejection]) -> None:
        self._pending += rejections

    def flush(self) -> list[Rejection]:
        pending, self._pending = self._pending, []
        if self.down.is_set():
            return pending
        for rejection in pending:
            record, headers = rejection.record, dead_letter_headers(rejection)
            value = record.value
            if value is not None and len(value) > self.max_bytes:
                headers.append(("triage.value.omitted_bytes", str(len(value)).encode()))
                value = None
            self.messages.append((record.key, value, headers))
            self.sent.append(rejection)
        return []


def build_runner(
    source: MemorySource,
    store: MemoryStore,
    dead_letters: MemoryDeadLetters,
    *,
    batch_size: int = 4,
    depth: int = 2,
    grace_s: float = 5.0,
    revoke_drain_s: float = 2.0,
    guard: DeadLetterGuard | None = None,
) -> Runner:
    shutdown = Shutdown(grace_s)
    model: Model[list[str]] = FakeModel()
    stages = (
        Chain.of(DecodeStage(Decoder(max_text_chars=1_000)))
        .then(TokenizeStage(model))
        .then(InferStage(model, TriagePolicy(0.6)))
        .then(StoreStage(store, dead_letters, Backoff(initial_s=0.005, max_s=0.02), shutdown.abandoned))
    )
    return Runner(
        source,
        stages,
        MicroBatcher(batch_size, max_wait_ms=5),
        depth=depth,
        shutdown=shutdown,
        revoke_drain_s=revoke_drain_s,
        metrics=Metrics(),
        guard=guard,
    )


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)
