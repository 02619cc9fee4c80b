"""Durations: the one reading and the one writing of 30m, 72h, 3d, 2w, for settings and options alike."""

from __future__ import annotations

import re
from datetime import timedelta

DURATION = re.compile(r"(\d+)\s*([mhdw])")
DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str) -> timedelta:
    """'30m', '72h', '3d' or '2w' -> a timedelta. Anything else (or zero) raises ValueError."""
    match = DURATION.fullmatch(value.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expected a duration like 30m, 72h, 3d or 2w, got {value!r}")
    return timedelta(**{DURATION_UNITS[match.group(2)]: int(match.group(1))})


def format_duration(value: timedelta) -> str:
    """A duration as parse_duration reads it, in the largest unit that divides it: 2w, 36h, 90m.
    Whole minutes only (what parse_duration can give); anything under a minute rounds down to 0m."""
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds // 60}m"
