"""Send: publish feedback events from a JSON-lines file to the input topic (`triage-worker send`).

Each non-empty line is sent as it is, so a malformed line reaches the worker and exercises the
dead-letter path exactly as a bad producer would. The key is the line's `event_id` when it has one.
A progress bar is shown when tqdm (the `tools` extra) is installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from worker.runtime.wiring import build_producer
from worker.settings import Settings


def event_key(line: bytes) -> bytes | None:
    try:
        payload = json.loads(line)
    except ValueError:
        return None
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    return event_id.encode("utf-8") if isinstance(event_id, str) else None


def send_lines(
    settings: Settings,
    lines: Iterable[bytes],
    topic: str | None = None,
    *,
    total: int | None = None,
    progress: bool = True,
) -> int:
    """Send every non-empty line; waits for all acknowledgements. Returns the number sent."""
    producer = build_producer(settings)
    futures = []
    try:
        for line in _with_progress(lines, total) if progress else lines:
            line = line.rstrip(b"\r\n")
            if line.strip():
                futures.append(producer.send(topic or settings.input_topic, key=event_key(line), value=line))
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)
    return len(futures)


def _with_progress(lines: Iterable[bytes], total: int | None) -> Iterator[bytes]:
    try:
        from tqdm import tqdm
    except ImportError:
        yield from lines
        return
    yield from tqdm(lines, total=total, unit="ev", desc="sending")
