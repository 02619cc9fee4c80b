"""Dead-letter guard: stop consuming when dead letters stop being the exception.

A producer that deploys a broken schema sends every event to the dead-letter topic. Without a
guard, lag stays 0 and every health check is green while the whole stream is lost to the DLQ (a
replay can bring it back, but only once someone notices). Like Arroyo's `DlqLimit`, the guard
trips when, after a batch,
- the share of dead letters among the last WINDOW events passes TRIAGE_DEAD_LETTER_MAX_RATIO
  (judged once the window is full, so a few bad events at start-up do not trip it), or
- a run of consecutive dead letters on one partition reaches TRIAGE_DEAD_LETTER_MAX_CONSECUTIVE.
A ratio of 1 and a run of 0 turn it off. Runs are counted per partition: a producer that poisons one
partition is caught even while good events on the others come in between.

Once tripped it stays tripped: the runner commits nothing from the tripping batch on, pauses every
partition, keeps polling (so it keeps its partitions instead of handing the same stream to the
next worker), `/readyz` answers 503 with the reason, `triage_dead_letter_guard_tripped` is 1 and
`dead_letter_guard_tripped` is logged once. What to do then: worker/docs/faults.md.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW = 1_000  # events the ratio is judged over


@dataclass(frozen=True)
class Trip:
    reason: str
    dead_letters: int  # in the window when it tripped
    events: int  # the window's size when it tripped


class DeadLetterGuard:
    def __init__(self, max_ratio: float, max_consecutive: int, window: int = WINDOW) -> None:
        if not 0.0 < max_ratio <= 1.0:
            raise ValueError("max_ratio must be in (0, 1]")
        self.max_ratio = max_ratio
        self.max_consecutive = max_consecutive  # 0: no limit on runs
        self.window: deque[bool] = deque(maxlen=window)  # True: dead-lettered, oldest first
        self.dead_in_window = 0
        self.consecutive: dict[int, int] = {}  # by partition: dead letters in a row, up to now
        self.tripped: Trip | None = None

    def observe(self, outcomes: list[tuple[int, bool]]) -> Trip | None:
        """Add one batch's events in order, as (partition, dead-lettered); the trip, if this batch made it."""
        if self.tripped:
            return None
        for partition, dead in outcomes:
            if len(self.window) == self.window.maxlen:
                self.dead_in_window -= self.window[0]
            self.window.append(dead)
            self.dead_in_window += dead
            run = self.consecutive[partition] = self.consecutive.get(partition, 0) + 1 if dead else 0
            if self.max_consecutive and run >= self.max_consecutive:
                return self._trip(f"{run} consecutive events dead-lettered on partition {partition}")
        full = len(self.window) == self.window.maxlen
        if full and self.max_ratio < 1.0 and self.dead_in_window > self.max_ratio * len(self.window):
            return self._trip(
                f"{self.dead_in_window} of the last {len(self.window)} events dead-lettered "
                f"(limit {self.max_ratio:.0%})"
            )
        return None

    def _trip(self, reason: str) -> Trip:
        self.tripped = Trip(
            f"{reason}; consuming stopped, nothing committed from here on: see worker/docs/faults.md",
            self.dead_in_window,
            len(self.window),
        )
        return self.tripped
