"""Settings: the one configuration object, read from `TRIAGE_*` environment variables and `.env`.

Built once at start-up (`load_settings`) and passed down to every stage. Invalid values fail
here, before any connection is opened, with a message that names the variable. Each setting is
described once, in its `Field(description=...)` (fields.py); worker/docs/settings.md's table is
generated from those (`python -m worker.devtools.settings_doc`, held by the docs test).
"""

from worker.settings.durations import format_duration, parse_duration
from worker.settings.errors import SettingsError, describe
from worker.settings.fields import Settings
from worker.settings.kafka import split_credentials
from worker.settings.loading import load_settings

__all__ = [
    "Settings",
    "SettingsError",
    "describe",
    "format_duration",
    "load_settings",
    "parse_duration",
    "split_credentials",
]
