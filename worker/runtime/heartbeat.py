"""Heartbeat: when the main loop last turned. The runner beats on every poll; the health server's
/healthz reads its age, so a wedged loop is restarted by its liveness probe."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any


class Heartbeat:
    """When the main loop last turned: the runner beats on every poll, /healthz reads its age."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last: float | None = None  # None until the loop's first turn (start-up waits, model load)

    def beat(self) -> None:
        self.last = self.clock()

    def stalled(self, after_s: float) -> Mapping[str, Any] | None:
        """None while the loop turns (or has not started); else how long it has been idle."""
        if self.last is None:
            return None
        idle = self.clock() - self.last
        return {"status": "stalled", "main_loop_idle_s": round(idle, 1)} if idle > after_s else None
