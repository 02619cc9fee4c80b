"""Send: publish feedback events from a JSON-lines file to the input topic (`triage-worker send`).

Each non-empty line is sent as it is, so a malformed line reaches the worker and exercises the
dead-letter path exactly as a bad producer would. The key is the line's `event_id` when it has one.
A progress bar is shown on stderr (drawn by tqdm when the `tools` extra is installed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from kafka.errors import KafkaTimeoutError

from worker.contracts.errors import OperatorError
from worker.ops.progress import progress as with_progress
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
    wait_s: float = 5.0,
) -> int:
    """Send every non-empty line; waits for all acknowledgements. Returns the number sent. A broker
    that cannot be reached, or a topic it does not have, is said in one line within `wait_s` (twice)."""
    producer = build_producer(settings, wait_ms=int(wait_s * 1000))
    futures = []
    topic = topic or settings.input_topic
    try:
        try:
            producer.partitions_for(topic)  # the topic's metadata, before any line is read
        except KafkaTimeoutError:
            raise OperatorError(
                f"the broker at {settings.kafka_bootstrap_servers} has no topic {topic} (or this client may not "
                "describe it): create it, or name another with --topic"
            ) from None
        for line in with_progress(lines, total=total, unit="ev", desc="sending", enabled=progress):
            line = line.rstrip(b"\r\n")
            if line.strip():
                futures.append(producer.send(topic, key=event_key(line), value=line))
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)
    return len(futures)
