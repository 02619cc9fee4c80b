"""Batcher: gather polled records into one micro-batch, flushed when full or when it has waited enough.

A batch is the unit of work: it is classified, stored in one transaction, and its offsets are
committed together. `max_batch_size` caps the events in it; `max_wait_ms` caps how long the
first record in it waits for company, which bounds latency under light load.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from worker.contracts.values import RawRecord


class MicroBatcher:
    def __init__(self, max_batch_size: int, max_wait_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.clock = clock
        self.pending: list[RawRecord] = []
        self._first_at: float | None = None

    def add(self, records: list[RawRecord]) -> None:
        if records and self._first_at is None:
            self._first_at = self.clock()
        self.pending.extend(records)

    def room(self) -> int:
        return max(self.max_batch_size - len(self.pending), 0)

    def time_left_ms(self) -> int:
        """How long the pending batch may still wait; 0 when it is due."""
        if self._first_at is None:
            return 0
        return max(math.ceil((self._first_at + self.max_wait_s - self.clock()) * 1000), 0)

    def ready(self) -> bool:
        return bool(self.pending) and (self.room() == 0 or self.time_left_ms() == 0)

    def take(self) -> list[RawRecord]:
        batch, self.pending, self._first_at = self.pending, [], None
        return batch
