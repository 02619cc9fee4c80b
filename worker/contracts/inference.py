"""Inference: the seam between the runtime and the model, with no torch on this side of it.

    Model.encode(texts) -> E (the model's own encoded passes, opaque to the runtime)
    Model.classify(E)   -> Inference: one Answer per text, in order, and what the passes cost

`Model` is generic over its encoded type, so the tokenize and infer stages hand the same `E` from
one to the other and mypy checks that they match. The real classifier
(worker.model.classifier.SentimentClassifier, E = worker.model.encoding.Encoded) and the unit
tests' fake implement this same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from worker.contracts.values import ClassificationFailure, Prediction

Answer = Prediction | ClassificationFailure
E = TypeVar("E")


@dataclass(frozen=True)
class InferenceStats:
    """What one `classify` call did, for the batch report and the benchmarks."""

    texts: int
    forward_passes: int
    padded_tokens: int
    real_tokens: int
    inference_ms: float


@dataclass(frozen=True)
class Inference:
    answers: list[Answer]  # in the order of the texts given to `encode`
    stats: InferenceStats


class Model(Protocol[E]):
    """What the stages need of a classifier."""

    model_name: str
    revision: str  # which weights: `sha:` hub commit or `dir:` content digest (worker.model.identity)
    calibration_id: str | None  # names the calibration in every stored row
    max_batch_size: int

    def encode(self, texts: Sequence[str]) -> E:
        """Tokenize and plan the forward passes (CPU work only)."""
        ...

    def classify(self, encoded: E) -> Inference:
        """Run the passes; a text the model cannot take even alone is a ClassificationFailure."""
        ...
