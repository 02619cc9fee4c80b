"""Stages: the four steps a micro-batch goes through between poll and commit, one object each.

    decode:   records -> valid events, and dead-letter reasons for the rest
    tokenize: texts -> padded forward passes (CPU work)
    infer:    the model's answers -> triaged, classified items
    store:    dead letters sent, results and outbox rows in one transaction, dead letters acknowledged

Each is a pipeline `Stage` (a name and `process`), run in its own thread by the pipeline. Each builds the
next frozen value and adds its own busy time to it. The store stage waits out an outage of
PostgreSQL or the broker (see retry), so the batch stays uncommitted until it is really stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from worker.contracts.errors import ErrorClass
from worker.contracts.inference import Model
from worker.contracts.values import (
    ClassificationFailure,
    ClassifiedItem,
    FeedbackItem,
    Rejection,
    ShadowAnswer,
)
from worker.logs import get_logger
from worker.runtime.batches import Decoded, Inferred, Polled, StageName, Stored, Tokenized, timed
from worker.runtime.decode import Decoder
from worker.runtime.failpoints import failpoint
from worker.runtime.ports import DeadLetters, ResultWriter
from worker.runtime.retry import Backoff, Unavailable, retry
from worker.runtime.triage import TriagePolicy

log = get_logger("worker.stages")
E = TypeVar("E")  # the model's encoded passes, handed from tokenize to infer unchanged


class DecodeStage:
    name = StageName.DECODE

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def process(self, batch: Polled) -> Decoded:
        started = time.perf_counter()
        items: list[FeedbackItem] = []
        rejections: list[Rejection] = []
        for record in batch.records:
            decoded = self.decoder.decode(record)
            if isinstance(decoded, FeedbackItem):
                items.append(decoded)
            else:
                rejections.append(decoded)
        return Decoded(batch, tuple(items), tuple(rejections), timed((), self.name, started))


class TokenizeStage(Generic[E]):
    name = StageName.TOKENIZE

    def __init__(self, model: Model[E]) -> None:
        self.model = model

    def process(self, batch: Decoded) -> Tokenized[E]:
        started = time.perf_counter()
        encoded = self.model.encode([item.text for item in batch.items])
        return Tokenized(batch, encoded, timed(batch.timings, self.name, started))


class Shadow:
    """A candidate model run beside the served one on the same texts (TRIAGE_SHADOW_MODEL). Its answers
    are kept with each item and stored apart; they never escalate and never change a stored result.

    It is best effort: whatever the candidate raises is logged (`shadow_failed`, the error's class and
    message, never a text), counted through `on_failure`, and that batch simply has no shadow answers;
    serving goes on."""

    def __init__(
        self, model: Model[Any], policy: TriagePolicy, on_failure: Callable[[BaseException], None] = lambda exc: None
    ) -> None:
        self.model = model
        self.policy = policy
        self.on_failure = on_failure

    def answer(self, items: Sequence[FeedbackItem]) -> list[ShadowAnswer | None]:
        """One answer per item, None where the candidate could not classify the text (or failed)."""
        try:
            inference = self.model.classify(self.model.encode([item.text for item in items]))
        except Exception as exc:  # noqa: BLE001 - the candidate must never take serving down
            log.warning(
                "shadow_failed",
                error=type(exc).__name__,
                message=str(exc).splitlines()[0][:200] if str(exc) else "",
                items=len(items),
            )
            self.on_failure(exc)
            return [None] * len(items)
        return [
            None
            if isinstance(answer, ClassificationFailure)
            else ShadowAnswer(
                self.model.model_name,
                self.model.revision,
                self.model.calibration_id,
                answer,
                self.policy.decide(answer),
            )
            for answer in inference.answers
        ]


class InferStage(Generic[E]):
    """Classify and triage; a text the model cannot take even alone becomes a dead letter. With a
    shadow candidate, it classifies the same texts after the served model."""

    name = StageName.INFER

    def __init__(self, model: Model[E], policy: TriagePolicy, shadow: Shadow | None = None) -> None:
        self.model = model
        self.policy = policy
        self.shadow = shadow

    def process(self, batch: Tokenized[E]) -> Inferred:
        started = time.perf_counter()
        decoded = batch.decoded
        queue_wait_s = started - decoded.polled.submitted_at - sum(seconds for _, seconds in batch.timings)
        inference = self.model.classify(batch.encoded)
        inference_ms = inference.stats.inference_ms
        classified: list[ClassifiedItem] = []
        rejections = list(decoded.rejections)
        shadows = self.shadow.answer(decoded.items) if self.shadow else [None] * len(decoded.items)
        for item, answer, shadow in zip(decoded.items, inference.answers, shadows, strict=True):
            if isinstance(answer, ClassificationFailure):
                rejections.append(Rejection(item.record, ErrorClass.CLASSIFICATION_FAILED, answer.message))
                continue
            classified.append(
                ClassifiedItem(
                    item=item,
                    prediction=answer,
                    decision=self.policy.decide(answer, item.event_id),
                    model=self.model.model_name,
                    model_revision=self.model.revision,
                    inference_ms=inference_ms,
                    batch_size=len(decoded.items),
                    calibration=self.model.calibration_id,
                    shadow=shadow,
                )
            )
        return Inferred(
            polled=decoded.polled,
            classified=tuple(classified),
            rejections=tuple(rejections),
            padded_tokens=inference.stats.padded_tokens,
            queue_wait_s=queue_wait_s,
            timings=timed(batch.timings, self.name, started),
        )


class StoreStage:
    """Send dead letters, store results and outbox rows in one transaction, await the dead letters.

    Records whose values the database refused (see store) become dead letters too. While
    PostgreSQL or the broker is down it waits with backoff; nothing of this batch is committed
    meanwhile, so a crash or an abandon replays it.
    """

    name = StageName.STORE

    def __init__(
        self, writer: ResultWriter, dead_letters: DeadLetters, backoff: Backoff, abandon: threading.Event
    ) -> None:
        self.writer = writer
        self.dead_letters = dead_letters
        self.backoff = backoff
        self.abandon = abandon

    def process(self, batch: Inferred) -> Stored:
        started = time.perf_counter()
        self.dead_letters.send(batch.rejections)
        outcome = retry(
            lambda: self.writer.write(batch.classified), backoff=self.backoff, abandon=self.abandon, event="store_retry"
        )
        self.dead_letters.send(refusal.rejection() for refusal in outcome.refused)
        failpoint("after_store")
        retry(self._deliver_dead_letters, backoff=self.backoff, abandon=self.abandon, event="dead_letter_retry")
        return Stored(batch, outcome, timed(batch.timings, self.name, started))

    def _deliver_dead_letters(self) -> None:
        """Wait for the broker's acknowledgements; what it missed is sent again and reported unavailable."""
        undelivered = self.dead_letters.flush()
        if undelivered:
            self.dead_letters.send(undelivered)
            raise Unavailable(f"broker: {len(undelivered)} dead letters not acknowledged")
