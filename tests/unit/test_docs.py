"""The README and worker/docs are held to the code: the verb table is the parser's verbs, every
setting is described in its field and its table row is made from it, every path named exists, every
example command parses, and CI runs the README's test command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from worker.cli import build_parser
from worker.devtools.settings_doc import render_table, table_in
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "worker" / "docs").glob("*.md"))
SETTINGS_DOC = ROOT / "worker" / "docs" / "settings.md"
TOP_LEVEL = ("worker/", "tests/", "schemas/", "migrations/", ".ci/", "docker-compose.yml", "pyproject.toml")


def verbs() -> set[str]:
    return set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def test_the_readme_verb_table_is_the_parsers_verbs() -> None:
    table = re.findall(r"(?m)^\| `triage-worker ([a-z]+)[^`]*` \|", README.read_text())
    assert sorted(table) == sorted(verbs()), "one row per verb, no more"


def documented_defaults() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for doc in [README, *DOCS]:
        for name, default in re.findall(r"(?m)^\| `TRIAGE_([A-Z0-9_]+)` \| ([^|]*) \|", doc.read_text()):
            rows.setdefault(name.lower(), []).append(default.strip())
    return rows


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_described_in_its_field_and_documented_once(name: str) -> None:
    assert Settings.model_fields[name].description, f"TRIAGE_{name.upper()} has no description"
    found = documented_defaults().get(name, [])
    assert len(found) == 1, f"TRIAGE_{name.upper()} is in {len(found)} settings rows"


def test_the_settings_table_is_made_from_the_fields() -> None:
    """Regenerate it with `python -m worker.devtools.settings_doc`."""
    assert table_in(SETTINGS_DOC.read_text()) == render_table()


def test_no_row_documents_a_setting_that_does_not_exist() -> None:
    assert set(documented_defaults()) <= set(Settings.model_fields)


def named_paths(doc: Path) -> list[tuple[str, Path]]:
    text = doc.read_text()
    found = [(link, doc.parent / link) for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)]
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.rstrip(".,:;")
        if token.startswith(TOP_LEVEL) and "*" not in token and "<" not in token:
            found.append((token, ROOT / token.split(":")[0]))
    return found


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_every_path_the_docs_name_exists(doc: Path) -> None:
    missing = [name for name, path in named_paths(doc) if not path.exists()]
    assert not missing, f"{doc.name} names {missing}"


def example_commands() -> list[tuple[str, str]]:
    commands = []
    for doc in [README, *DOCS]:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in re.split(r"&&|\|", line):
                    words = part.strip()
                    if words.startswith("triage-worker "):
                        commands.append((doc.name, words))
    return commands


@pytest.mark.parametrize(("doc", "command"), example_commands())
def test_every_example_command_parses(doc: str, command: str) -> None:
    command = re.sub(r"\$\(\([^)]*\)\)|\$\w+", "1000", command)  # shell arithmetic and variables: counts
    words = shlex.split(command, comments=True)
    cut = next((i for i, w in enumerate(words) if w.startswith((">", "<", "2>"))), len(words))  # a redirection
    build_parser().parse_args(words[1:cut])  # argparse exits (a failure here) on an unknown option


def test_every_verb_has_an_example_in_the_cli_doc() -> None:
    used = {command.split()[1] for doc, command in example_commands() if doc == "cli.md"}
    assert verbs() <= used, sorted(verbs() - used)


TEST_COMMAND = "python -m pytest -q -n 4 --dist loadgroup --durations=20"


def test_ci_runs_the_readme_test_command() -> None:
    assert f"the test command `{TEST_COMMAND}`" in README.read_text()
    assert f"\n{TEST_COMMAND}\n" in (ROOT / ".ci" / "run").read_text()
