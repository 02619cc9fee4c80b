"""The pipeline alone: order kept across stage threads, the depth bound, failures handed to the caller."""

from __future__ import annotations

import random
import threading
import time

import pytest

from worker.runtime.batches import StageName
from worker.runtime.pipeline import Chain, Pipeline


class Step:
    def __init__(self, name: StageName, fail_on: int | None = None, gate: threading.Event | None = None) -> None:
        self.name, self.fail_on, self.gate = name, fail_on, gate

    def process(self, batch: list[int]) -> list[int]:
        if self.gate:
            self.gate.wait()
        time.sleep(random.random() / 1000)
        if batch[0] == self.fail_on:
            raise RuntimeError(f"{self.name} failed on {batch[0]}")
        return [*batch, len(batch)]


def drain(pipeline: Pipeline[list[int]], count: int) -> list[list[int]]:
    out: list[list[int]] = []
    while len(out) < count:
        out += pipeline.finished(0.05)
    return out


def test_batches_leave_in_the_order_they_came_through_every_stage() -> None:
    pipeline: Pipeline[list[int]] = Pipeline(Chain.of(Step(StageName.DECODE)).then(Step(StageName.INFER)), depth=3)
    out: list[list[int]] = []
    for n in range(50):
        while pipeline.full():
            out += pipeline.finished(0.05)
        pipeline.submit([n])
    out += drain(pipeline, 50 - len(out))
    assert out == [[n, 1, 2] for n in range(50)] and pipeline.in_flight == 0
    pipeline.close()


def test_depth_bounds_the_batches_in_flight() -> None:
    gate = threading.Event()
    pipeline: Pipeline[list[int]] = Pipeline(Chain.of(Step(StageName.STORE, gate=gate)), depth=2)
    pipeline.submit([1])
    pipeline.submit([2])
    assert pipeline.full() and pipeline.finished(0.01) == []
    gate.set()
    assert drain(pipeline, 2) == [[1, 1], [2, 1]] and not pipeline.full()
    pipeline.close()


def test_a_failing_stage_hands_out_earlier_batches_then_raises_on_every_call() -> None:
    pipeline: Pipeline[list[int]] = Pipeline(
        Chain.of(Step(StageName.DECODE)).then(Step(StageName.STORE, fail_on=3)), depth=8
    )
    for n in range(6):
        pipeline.submit([n])
    assert drain(pipeline, 3) == [[0, 1, 2], [1, 1, 2], [2, 1, 2]]
    for _ in range(2):
        with pytest.raises(RuntimeError, match="store failed on 3"):
            pipeline.finished(0.5)
