"""The README documents every setting and every CLI verb, and names the command CI runs."""

from pathlib import Path

import pytest

from worker.cli import build_parser
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`TRIAGE_{name.upper()}`" in README


def test_every_verb_has_an_example() -> None:
    verbs = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for verb in verbs:
        assert f"triage-worker {verb}" in README


def test_ci_runs_the_readme_test_command() -> None:
    assert "python -m pytest -q" in README
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
