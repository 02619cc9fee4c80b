"""Settings errors: an invalid configuration, said as one line per setting, each named by its variable."""

from __future__ import annotations

from pydantic import ValidationError


class SettingsError(ValueError):
    """Raised when the environment holds an invalid configuration."""


def describe(exc: ValidationError) -> str:
    """Validation errors as one line per setting, each named by its variable."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "settings"
        name = f"TRIAGE_{field.upper()}" if error["loc"] else "settings"
        lines.append(f"  {name}: {error['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)
