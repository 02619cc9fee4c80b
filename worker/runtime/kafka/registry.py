"""Registry: is a framed value's schema id one the Schema Registry knows? (TRIAGE_SCHEMA_REGISTRY_URL)

Decode takes the Confluent frame off any value; with a registry URL set, it also asks the registry
about each schema id it has not seen (`GET /schemas/ids/{id}`) and keeps the answer: a known id (up to
CACHE_SIZE of them, least recently seen forgotten first), an unknown one (404) for UNKNOWN_TTL_S, so
an id registered a moment later is not refused for long. An id the registry does not know is
dead-lettered as `unknown_schema`.

The registry is a catalogue, not a dependency of the stream. One that cannot be reached, answers
anything else, or fails in any way refuses nothing: the event goes on unchecked, the failure is
remembered for FAILURE_TTL_S (so a hung registry costs one timeout, not one per record) and logged
at most once a minute. Credentials, from the URL's user part or TRIAGE_SCHEMA_REGISTRY_AUTH, go in an
Authorization header, never in the URL asked or a log line.
"""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from worker.logs import get_logger
from worker.settings import split_credentials

log = get_logger("worker.registry")
V = TypeVar("V")

UNKNOWN_TTL_S = 60.0
FAILURE_TTL_S = 30.0
TIMEOUT_S = 3.0
WARN_EVERY_S = 60.0
CACHE_SIZE = 10_000


class SchemaRegistry:
    def __init__(self, url: str, auth: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.url, from_url = split_credentials(url)
        credentials = auth or from_url
        self.headers = {"Accept": "application/vnd.schemaregistry.v1+json"}
        if credentials:
            self.headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.clock = clock
        self.known: OrderedDict[int, None] = OrderedDict()
        self.unknown_until: OrderedDict[int, float] = OrderedDict()
        self.failing_until = 0.0
        self._warned_at = -WARN_EVERY_S

    def knows(self, schema_id: int) -> bool:
        """False only when the registry says it has no such id; True when it has, or cannot answer."""
        now = self.clock()
        if schema_id in self.known:
            self.known.move_to_end(schema_id)
            return True
        if self.unknown_until.get(schema_id, 0.0) > now:
            return False
        if self.failing_until > now:
            return True
        answer = self._ask(schema_id)
        if answer is None:
            self.failing_until = now + FAILURE_TTL_S
            return True
        if answer:
            self._remember(self.known, schema_id, None)
        else:
            self._remember(self.unknown_until, schema_id, now + UNKNOWN_TTL_S)
        return answer

    def _ask(self, schema_id: int) -> bool | None:
        """The registry's answer for one id; None when it gave none."""
        request = urllib.request.Request(f"{self.url}/schemas/ids/{schema_id}", headers=self.headers)
        try:
            urllib.request.urlopen(request, timeout=TIMEOUT_S).close()
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            self._warn(f"HTTP {exc.code}")
        except Exception as exc:  # noqa: BLE001 - refused, reset, timed out, an answer that is not HTTP ...
            self._warn(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
        return None

    @staticmethod
    def _remember(cache: OrderedDict[int, V], schema_id: int, value: V) -> None:
        cache[schema_id] = value
        cache.move_to_end(schema_id)
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)

    def _warn(self, reason: str) -> None:
        if self.clock() - self._warned_at >= WARN_EVERY_S:
            self._warned_at = self.clock()
            log.warning(
                "schema_registry_unavailable",
                reason=reason[:300],
                effect=f"framed events pass unchecked for {FAILURE_TTL_S:.0f} s at a time",
            )
