"""Pipeline: one thread per stage, joined by bounded queues, so decoding, tokenizing, inference and
storing of consecutive batches overlap.

The runner's main thread owns the Kafka consumer (it is not thread-safe): it polls, submits
micro-batches here, and commits each batch once it comes out of the last stage. Every stage is
one thread, so batches leave in the order they were submitted and offsets are committed in order.
`depth` bounds the batches in flight; when it is reached the worker pauses its partitions and
keeps polling, so it never outstays `max_poll_interval_ms`. A stage that raises stops the
pipeline, and the error is raised again in the main thread by `finished()`.

The stages come as a `Chain`, built one `then` at a time: each stage must take what the one before
it returns, so mypy rejects a chain in the wrong order, and the runner asks for a
`Chain[Polled, Stored]`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from worker.runtime.batches import StageName

T = TypeVar("T")
In = TypeVar("In", contravariant=True)
Out = TypeVar("Out", covariant=True)
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


class Stage(Protocol[In, Out]):
    """One step of the pipeline: takes a batch, returns the next value for the step after it."""

    name: StageName

    def process(self, batch: In) -> Out: ...


class Chain(Generic[A, B]):
    """Stages in order, from one taking an A to one returning a B."""

    def __init__(self, stages: Sequence[Stage[Any, Any]]) -> None:
        self.stages: tuple[Stage[Any, Any], ...] = tuple(stages)

    @staticmethod
    def of(first: Stage[A, B]) -> Chain[A, B]:
        return Chain([first])

    def then(self, stage: Stage[B, C]) -> Chain[A, C]:
        return Chain([*self.stages, stage])


_STOP = object()


class Pipeline(Generic[T]):
    def __init__(self, chain: Chain[Any, T], depth: int) -> None:
        stages = chain.stages
        self.depth = depth
        self.in_flight = 0
        self._queues: list[queue.Queue[object]] = [queue.Queue(maxsize=depth) for _ in stages]
        self._done: queue.Queue[object] = queue.Queue()
        self._failure: BaseException | None = None
        self._threads = [
            threading.Thread(
                target=self._serve,
                args=(stage, self._queues[i], self._queues[i + 1] if i + 1 < len(stages) else self._done),
                name=f"stage-{stage.name}",
                daemon=True,  # an abandoned worker exits without waiting for a stage
            )
            for i, stage in enumerate(stages)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self, stage: Stage[Any, Any], inbox: queue.Queue[object], outbox: queue.Queue[object]) -> None:
        while (item := inbox.get()) is not _STOP:
            try:
                outbox.put(stage.process(item))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
                self._failure = exc
                self._done.put(_STOP)
                return
        outbox.put(_STOP)

    def full(self) -> bool:
        return self.in_flight >= self.depth

    def submit(self, batch: Any) -> None:
        self.in_flight += 1
        self._queues[0].put(batch)

    def finished(self, timeout_s: float) -> list[T]:
        """Batches that went through every stage, oldest first; waits up to `timeout_s` for one.

        When a stage has failed, the batches that finished before the failure are still handed
        out; then this raises the stage's error, on this and every later call.
        """
        done: list[T] = []
        try:
            item = self._done.get(timeout=timeout_s) if timeout_s > 0 else self._done.get_nowait()
            while item is not _STOP:
                done.append(item)  # type: ignore[arg-type]
                item = self._done.get_nowait()
            self._done.put(_STOP)  # the stages have ended (a failure, or close): keep saying so
        except queue.Empty:
            pass
        self.in_flight -= len(done)
        if self._failure is not None and not done:
            raise self._failure  # the worker must stop
        return done

    def close(self, timeout_s: float = 10.0) -> None:
        """Let the stages finish what they hold and end their threads."""
        if self._failure is None:
            self._queues[0].put(_STOP)
        for thread in self._threads:
            thread.join(timeout_s)
