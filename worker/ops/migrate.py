"""Migrate: apply the Alembic migrations in `migrations/` to TRIAGE_DATABASE_URL.

The Alembic config is built in code. The migrations folder sits at the top of the repository
and is installed with the package as `worker/migrations` (see pyproject.toml), so
`triage-worker migrate` works from a checkout and from an installed wheel alike.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config


def migrations_dir() -> Path:
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").exists():
        return checkout
    installed = Path(str(resources.files("worker") / "migrations"))
    if (installed / "env.py").exists():
        return installed
    raise FileNotFoundError("migrations folder not found next to the package or inside it")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
