"""Registry: is a framed value's schema id one the Schema Registry knows? (TRIAGE_SCHEMA_REGISTRY_URL)

Decode takes the Confluent frame off any value; with a registry URL set, it also asks the registry
about each schema id it has not seen (`GET /schemas/ids/{id}`) and keeps the answer: a known id for
good, an unknown one (404) for UNKNOWN_TTL_S, so an id registered a moment later is not refused for
long. An id the registry does not know is dead-lettered as `unknown_schema`. A registry that cannot
be reached (or answers anything else) refuses nothing: the event goes on unchecked, and the failure
is logged at most once a minute. The registry is a catalogue, not a dependency of the stream.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

from worker.logs import get_logger

log = get_logger("worker.registry")

UNKNOWN_TTL_S = 60.0
TIMEOUT_S = 3.0
WARN_EVERY_S = 60.0


class SchemaRegistry:
    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url.rstrip("/")
        self.clock = clock
        self.known: set[int] = set()
        self.unknown_until: dict[int, float] = {}
        self._warned_at = -WARN_EVERY_S

    def knows(self, schema_id: int) -> bool:
        """False only when the registry says it has no such id; True when it has, or cannot answer."""
        if schema_id in self.known:
            return True
        if self.unknown_until.get(schema_id, 0.0) > self.clock():
            return False
        try:
            request = urllib.request.Request(
                f"{self.url}/schemas/ids/{schema_id}", headers={"Accept": "application/vnd.schemaregistry.v1+json"}
            )
            urllib.request.urlopen(request, timeout=TIMEOUT_S).close()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                self.unknown_until[schema_id] = self.clock() + UNKNOWN_TTL_S
                return False
            self._warn(f"HTTP {exc.code}")
            return True
        except (urllib.error.URLError, OSError) as exc:
            self._warn(str(getattr(exc, "reason", exc)))
            return True
        self.known.add(schema_id)
        return True

    def _warn(self, reason: str) -> None:
        if self.clock() - self._warned_at >= WARN_EVERY_S:
            self._warned_at = self.clock()
            log.warning("schema_registry_unavailable", reason=reason[:300], effect="framed events pass unchecked")
