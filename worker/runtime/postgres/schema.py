"""Schema: where the migrations live, and whether a database is reachable and at their head.

The worker refuses to start on a database whose schema is not at the head revision (exit 2, one
line naming `triage-worker migrate`), and `/readyz` reports the same check. The migrations folder
sits at the top of the repository and is installed with the package as `worker/migrations`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError


def migrations_dir() -> Path:
    checkout = Path(__file__).resolve().parents[3] / "migrations"
    if (checkout / "env.py").exists():
        return checkout
    installed = Path(str(resources.files("worker") / "migrations"))
    if (installed / "env.py").exists():
        return installed
    raise FileNotFoundError("migrations folder not found next to the package or inside it")


def alembic_config(database_url: str = "") -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@dataclass(frozen=True)
class SchemaState:
    current: tuple[str, ...]  # revisions the database is at (none: never migrated)
    head: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return set(self.current) == set(self.head)

    def problem(self) -> str:
        at = ", ".join(self.current) or "no revision (never migrated)"
        return f"the database schema is at {at}, this worker needs {', '.join(self.head)}: run `triage-worker migrate`"


def schema_state(engine: Engine) -> SchemaState:
    head = tuple(ScriptDirectory.from_config(alembic_config()).get_heads())
    with engine.connect() as connection:
        current = tuple(MigrationContext.configure(connection).get_current_heads())
    return SchemaState(current, head)


def database_reachable(engine: Engine) -> bool:
    """For /readyz: whether a connection opens and answers."""
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        return True
    except DBAPIError:
        return False


def schema_at_head(engine: Engine) -> bool:
    """For /readyz: whether the database is reachable and at the migrations' head."""
    try:
        return schema_state(engine).at_head
    except DBAPIError:
        return False
