"""Failpoints: let the fault tests SIGKILL the worker at an exact stage of the data flow.

`TRIAGE_FAILPOINT=<name>:<n>` kills the process the n-th time it passes `<name>`. Names:
`after_poll` (records fetched, nothing stored), `after_store` (rows committed in Postgres,
offsets not yet committed), `after_commit` (offsets committed, escalations not yet relayed),
`during_relay` (escalations sent to Kafka, outbox rows not yet marked published).
Unset, which is always the case in production, each call is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_spec = os.environ.get("TRIAGE_FAILPOINT", "")
_name, _, _count = _spec.partition(":")
_remaining = int(_count or 1) if _name else 0


def failpoint(name: str) -> None:
    global _remaining
    if _remaining and name == _name:
        _remaining -= 1
        if _remaining == 0:
            os.kill(os.getpid(), signal.SIGKILL)
