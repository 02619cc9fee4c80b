"""Progress: a bar on stderr for the operator tools that read large files (`send`, `evaluate`, `calibrate`).

tqdm draws it when installed (the `tools` extra); without it, a plain line every tenth of the way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None, unit: str, desc: str, enabled: bool = True) -> Iterator[T]:
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from _plain(items, total, unit, desc)
        return
    yield from tqdm(items, total=total, unit=unit, desc=desc)


def _plain(items: Iterable[T], total: int | None, unit: str, desc: str) -> Iterator[T]:
    step = max((total or 0) // 10, 1)
    done = 0
    for item in items:
        yield item
        done += 1
        if total and done % step == 0:
            print(f"{desc}: {done:,}/{total:,} {unit}", file=sys.stderr)
