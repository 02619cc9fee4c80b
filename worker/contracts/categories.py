"""Categories: the teams an escalation can be routed to, as the support lead defines them (TRIAGE_CATEGORIES).

One file, JSON or YAML, read by the worker, `ack`, `export`, `evaluate`, `calibrate` and `finetune`
alike:

    routing: topic            # topic: each category's escalations go to its `route` topic
                              # key: every escalation stays on TRIAGE_ESCALATION_TOPIC, and its
                              #      `route` rides in the `triage.route` header for a router downstream
    categories:
      - name: late_delivery   # lower case, digits and _; `general` is reserved for what is not routed
        description: Parcels that arrived late or never
        route: support.delivery
        examples: ["still waiting for my order", "the parcel never came"]

Anything the worker could misread is refused at start with one line: an unknown field (with the
nearest known one), a duplicate or ill-formed name, `general` defined, a missing route, a route that
is not a Kafka topic name under `routing: topic`.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from worker.contracts.errors import OperatorError

GENERAL = "general"  # everything not routed to a team: no category, a gated one, or one under the threshold
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
Routing = Literal["topic", "key"]
FILE_FIELDS = ("routing", "categories")
CATEGORY_FIELDS = ("name", "description", "route", "examples")


class CategoryError(OperatorError):
    """The category file cannot be used as it is; the message says where and why, in one line."""


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    route: str  # a topic (routing: topic) or a queue key for a router downstream (routing: key)
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class CategoryList:
    categories: tuple[Category, ...]
    routing: Routing = "topic"
    source: str = ""  # the file it was read from, for messages
    by_name: dict[str, Category] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.categories})

    @property
    def names(self) -> list[str]:
        """The defined categories, in the file's order (`general` not among them)."""
        return [c.name for c in self.categories]

    def check(self, name: str, where: str = "category") -> str:
        """`name` if it is defined or `general`; otherwise a CategoryError naming the nearest one."""
        if name == GENERAL or name in self.by_name:
            return name
        raise CategoryError(f"{where} {name!r} is not in {self.source or 'the category file'}{_nearest(name, self)}")

    def topics(self) -> list[str]:
        """The topics escalations may go to besides TRIAGE_ESCALATION_TOPIC (none under `routing: key`)."""
        return sorted({c.route for c in self.categories}) if self.routing == "topic" else []


def load(path: Path) -> CategoryList:
    """Read and check a category file (`.json`, `.yaml` or `.yml`)."""
    where = str(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CategoryError(f"cannot read the category file {where}: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            document = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise CategoryError(f"{where} is not valid YAML{at}") from None
    else:
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise CategoryError(f"{where} is not valid JSON: {exc}") from None
    return parse(document, where)


def parse(document: Any, where: str = "the category file") -> CategoryList:
    if not isinstance(document, dict):
        raise CategoryError(f"{where} must hold an object with `categories` (a list) and optionally `routing`")
    _known_fields(document, FILE_FIELDS, where)
    routing = document.get("routing", "topic")
    if routing not in ("topic", "key"):
        raise CategoryError(f"{where}: routing must be `topic` or `key`, got {routing!r}")
    entries = document.get("categories")
    if not isinstance(entries, list) or not entries:
        raise CategoryError(f"{where}: `categories` must be a list with at least one category")
    seen: set[str] = set()
    categories = []
    for number, entry in enumerate(entries, start=1):
        here = f"{where}: category {number}"
        if not isinstance(entry, dict):
            raise CategoryError(f"{here} must be an object with name, description and route")
        _known_fields(entry, CATEGORY_FIELDS, here)
        name = entry.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise CategoryError(f"{here}: name must be lower-case letters, digits and _ (at most 63), got {name!r}")
        here = f"{where}: category {name!r}"
        if name == GENERAL:
            raise CategoryError(f"{here} is reserved for the items not routed to a team; leave it out of the file")
        if name in seen:
            raise CategoryError(f"{here} is defined twice")
        seen.add(name)
        route = entry.get("route")
        if not isinstance(route, str) or not route.strip():
            raise CategoryError(f"{here} has no route (a topic under routing: topic, a queue key under routing: key)")
        if routing == "topic" and not TOPIC_NAME.fullmatch(route):
            raise CategoryError(
                f"{here}: route {route!r} is not a Kafka topic name (1 to 249 of letters, digits, '.', '_', '-')"
            )
        examples = entry.get("examples") or []
        if not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
            raise CategoryError(f"{here}: examples must be a list of texts")
        description = entry.get("description") or ""
        if not isinstance(description, str):
            raise CategoryError(f"{here}: description must be a text")
        categories.append(Category(name, description.strip(), route.strip(), tuple(examples)))
    return CategoryList(tuple(categories), routing, where)


def _known_fields(entry: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in entry:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            raise CategoryError(f"{where}: unknown field {key!r}{hint}")


def _nearest(name: str, categories: CategoryList) -> str:
    close = difflib.get_close_matches(name, [*categories.names, GENERAL], n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (defined: {', '.join([*categories.names, GENERAL])})"
