"""Heartbeat: when the main loop last turned. The runner beats on every poll; the health server's
/healthz reads its age, so a wedged loop is restarted by its liveness probe. `on_beat` hears of it at
most once a second (the metrics' `triage_main_loop_last_poll_timestamp_seconds`, which is how the
supervisor of `run --processes N` sees each child's loop)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any


class Heartbeat:
    """When the main loop last turned: the runner beats on every poll, /healthz reads its age."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, on_beat: Callable[[], None] = lambda: None) -> None:
        self.clock = clock
        self.on_beat = on_beat
        self.last: float | None = None  # None until the loop's first turn (start-up waits, model load)
        self._told: float | None = None

    def beat(self) -> None:
        self.last = self.clock()
        if self._told is None or self.last - self._told >= 1.0:
            self._told = self.last
            self.on_beat()

    def stalled(self, after_s: float) -> Mapping[str, Any] | None:
        """None while the loop turns (or has not started); else how long it has been idle."""
        if self.last is None:
            return None
        idle = self.clock() - self.last
        return {"status": "stalled", "main_loop_idle_s": round(idle, 1)} if idle > after_s else None
