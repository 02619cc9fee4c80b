"""Shutdown: stop requests as plain flags, with a deadline, that every loop of the worker watches.

The first SIGTERM/SIGINT (or `request()`) asks for a clean stop: finish the batches in hand,
commit, leave the group. The drain gets `grace_s`; past that deadline, or at a second signal,
the work in hand is abandoned: nothing more is committed, and it is replayed after a restart.
Signal handlers only set flags, so no exception is ever raised into code at an arbitrary point.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from worker.logs import get_logger

log = get_logger("worker.shutdown")


class Shutdown:
    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self.clock = clock
        self.requested = threading.Event()
        self.abandoned = threading.Event()
        self.deadline = float("inf")

    def request(self, reason: str = "requested") -> None:
        """Ask for a clean stop; asked a second time, abandon."""
        if self.requested.is_set():
            self.abandon(f"second {reason}")
            return
        log.info("shutdown_requested", reason=reason, grace_s=self.grace_s)
        self.deadline = self.clock() + self.grace_s
        self.requested.set()

    def abandon(self, reason: str) -> None:
        if not self.abandoned.is_set():
            log.warning("shutdown_abandoning", reason=reason)
        self.requested.set()
        self.abandoned.set()

    def expired(self) -> bool:
        """True once the work in hand must be abandoned (second request, or the deadline passed)."""
        if not self.abandoned.is_set() and self.clock() >= self.deadline:
            self.abandon(f"drain took longer than {self.grace_s}s")
        return self.abandoned.is_set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request(signal.Signals(signum).name)
