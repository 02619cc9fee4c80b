"""Settings doc: the table of worker/docs/settings.md, made from the settings' own fields.

    python -m worker.devtools.settings_doc     # rewrite the table in worker/docs/settings.md

Each row is a field of `Settings`: its variable, its default (or, for one whose default is None, the
word its `unset` extra gives), and its description, the one place a setting's meaning is written.
The docs test holds the file to this rendering.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from worker.settings import Settings, format_duration

DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
HEADER = "| variable | default | meaning |\n| --- | --- | --- |\n"


def default_text(field: FieldInfo) -> str:
    value = field.default
    if value is None:
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        return str(extra.get("unset", "unset"))
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    elif isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, timedelta):
        value = format_duration(value)
    elif isinstance(value, tuple):
        value = ",".join(value)
    return f"`{value}`"


def render_table() -> str:
    rows = [
        f"| `TRIAGE_{name.upper()}` | {default_text(field)} | {field.description} |"
        for name, field in Settings.model_fields.items()
    ]
    return HEADER + "\n".join(rows) + "\n"


def table_in(text: str) -> str:
    """The settings table as it stands in the doc: from its header to the first line after it that is
    not a table row."""
    start = text.index(HEADER)
    end = start + len(HEADER)
    while end < len(text) and text.startswith("|", end):
        end = text.index("\n", end) + 1
    return text[start:end]


def main() -> int:
    text = DOC.read_text()
    DOC.write_text(text.replace(table_in(text), render_table()))
    print(f"{DOC}: {len(Settings.model_fields)} settings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
