"""Loading: the settings from the environment, `.env` and mounted secret files, once, at start-up."""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from worker.settings.errors import SettingsError, describe
from worker.settings.fields import Settings


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, turning validation errors into one clear message.

    With TRIAGE_SECRETS_DIR, a setting can also come from a file of that folder named after its
    variable (`TRIAGE_DATABASE_URL`, any case), as Kubernetes and Docker mount secrets; a variable
    in the environment wins over the file."""
    secrets_dir = os.environ.get("TRIAGE_SECRETS_DIR")
    if secrets_dir is not None and not os.path.isdir(secrets_dir):
        raise SettingsError(f"invalid configuration:\n  TRIAGE_SECRETS_DIR: {secrets_dir!r} is not a folder")
    try:
        return Settings(**overrides, _secrets_dir=secrets_dir)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
