"""Retry: wait out a dependency that is down (PostgreSQL, the broker), with backoff, until it is back
or the worker is told to abandon its work.

A call that fails because its dependency cannot be reached raises `Unavailable`; any other error
is a real failure and goes straight through. Waiting watches the abandon event, so shutdown
never depends on an exception raised into a thread at an arbitrary point.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from worker.logs import get_logger

log = get_logger("worker.retry")
T = TypeVar("T")


class Unavailable(Exception):
    """A dependency cannot be reached now; the same call may succeed later."""


class Abandoned(Exception):
    """The worker abandoned its work while this call was waiting for a dependency."""


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 10.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


def retry(action: Callable[[], T], *, backoff: Backoff, abandon: threading.Event, event: str) -> T:
    """Call `action` until it stops raising `Unavailable`; log `event` (e.g. `store_retry`) each time.

    Raises `Abandoned` as soon as `abandon` is set while waiting.
    """
    for delay in backoff.delays():
        try:
            return action()
        except Unavailable as exc:
            log.warning(event, delay_s=delay, error=str(exc))
        if abandon.wait(delay):
            raise Abandoned(event)
    raise AssertionError("unreachable: backoff delays never end")
