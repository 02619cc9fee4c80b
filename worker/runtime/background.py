"""Background loops: work that runs beside the main loop, each in a thread of its own.

The runner starts every loop before it consumes and stops every loop as it ends; it knows nothing
of what a loop does. Wiring builds two: the outbox relay (see relay) and the housekeeping (see
housekeeping). A `Periodic` calls its `round()` every `interval_s` until it is stopped and, at a
clean stop, calls `last_round()` once more (the relay publishes what is pending there). Each
round returns a `RoundReport`, which the runner adds to its totals and the metrics the same way
for every loop. A round that raises is logged and the loop goes on: these loops keep the outbox
and the tables tidy, and a failed round is retried on the next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from worker.logs import get_logger
from worker.runtime.batches import StageName

log = get_logger("worker.background")


@dataclass(frozen=True)
class Unpublished:
    """Outbox rows of one kind not yet acknowledged by the broker, and how long the oldest has waited;
    and the rows set aside because the broker refuses them for good (parked)."""

    rows: int
    oldest_s: float  # 0 when there are none
    parked: int = 0


@dataclass(frozen=True)
class RoundReport:
    """What one round of a background loop did: its busy time, what it published (by outbox kind),
    the work it left for later (by chore: rows a chore could not get through in its time), and the
    outbox rows still waiting for the broker (by kind), where the loop measures them."""

    stage: StageName
    busy_s: float
    published: Mapping[str, int] = field(default_factory=dict)
    backlog: Mapping[str, int] = field(default_factory=dict)
    unpublished: Mapping[str, Unpublished] = field(default_factory=dict)


OnRound = Callable[[RoundReport], None]


class BackgroundLoop(Protocol):
    name: str

    def start(self, on_round: OnRound) -> None: ...

    def stop(self, *, final_round: bool, timeout_s: float) -> None:
        """End the loop; with `final_round`, let it finish its work first, waiting up to `timeout_s`."""


class Periodic:
    """A job's `round()` every `interval_s`, in a daemon thread (an abandoned worker does not wait for it)."""

    def __init__(
        self,
        name: str,
        stage: StageName,
        round: Callable[[], Mapping[str, int] | None],
        interval_s: float,
        *,
        last_round: Callable[[], Mapping[str, int] | None] | None = None,
        backlog: Callable[[], Mapping[str, int]] = dict,
        unpublished: Callable[[], Mapping[str, Unpublished]] = dict,
    ) -> None:
        self.name = name
        self.stage = stage
        self.interval_s = interval_s
        self._round = round
        self._last_round = last_round
        self._backlog = backlog
        self._unpublished = unpublished
        self._stop = threading.Event()
        self._final_round = True
        self._on_round: OnRound = lambda report: None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self, on_round: OnRound) -> None:
        self._on_round = on_round
        self._thread.start()

    def stop(self, *, final_round: bool, timeout_s: float) -> None:
        self._final_round = final_round
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        self._run(self._round)  # at start too: the first round need not wait a whole interval
        while not self._stop.wait(self.interval_s):
            self._run(self._round)
        if self._final_round and self._last_round is not None:
            self._run(self._last_round)

    def _run(self, job: Callable[[], Mapping[str, int] | None]) -> None:
        started = time.perf_counter()
        published: Mapping[str, int] | None = None
        try:
            published = job()
        except Exception as exc:  # noqa: BLE001 - a background round; the next one tries again
            log.error(f"{self.name}_failed", error=f"{type(exc).__name__}: {exc}"[:500])
        busy_s = time.perf_counter() - started
        try:
            report = RoundReport(self.stage, busy_s, published or {}, dict(self._backlog()), dict(self._unpublished()))
            self._on_round(report)
        except Exception as exc:  # noqa: BLE001 - a figure that cannot be kept must not end the loop
            # Once, a relay round that published to a lane the metrics did not know raised here, and the
            # relay thread died: escalations stayed in the outbox while the worker looked healthy.
            log.error(f"{self.name}_report_failed", error=f"{type(exc).__name__}: {exc}"[:500])
