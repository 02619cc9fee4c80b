"""The package keeps one import direction: contracts <- model <- runtime <- ops/devtools <- cli.

Read from the source with `ast`, so a wrong import fails here before it turns into a cycle or
drags torch into a module that never needs it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "worker"
# Which parts of the worker each part may import. `settings` and `logs` sit under everything.
ALLOWED = {
    "contracts": {"contracts"},
    "model": {"contracts", "model", "logs"},
    "runtime": {"contracts", "model", "runtime", "settings", "logs"},
    "ops": {"contracts", "model", "runtime", "ops", "settings", "logs"},
    "devtools": {"contracts", "model", "runtime", "ops", "devtools", "settings", "logs"},
    "cli": {"contracts", "runtime", "ops", "devtools", "settings", "logs"},
    "settings": set(),
    "logs": set(),
    "__main__": {"cli"},
    "__init__": set(),
}
TORCH_ALLOWED = {"model", "devtools"}  # the classifier owns the model; the benchmarks time it


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_follow_the_layers(module: str) -> None:
    part = module.split(".")[0]
    imported = imports_of(modules()[module])
    used = {name.split(".")[1] for name in imported if name.startswith("worker.") and len(name.split(".")) > 1}
    assert used <= ALLOWED[part], f"{module} imports {sorted(used - ALLOWED[part])}"
    if part not in TORCH_ALLOWED:
        assert not {n.split(".")[0] for n in imported} & {"torch", "transformers"}, module


def test_no_import_cycles_between_modules() -> None:
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = set()
        for name in imports_of(path):
            name = name.removeprefix("worker.")
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in graph[node]:
            if state.get(target) == 1:
                raise AssertionError(" -> ".join([*path[path.index(target) :], target]))
            if not state.get(target):
                visit(target, [*path, target])
        state[node] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [module])


def test_metrics_the_runner_and_the_quality_tools_load_without_the_model_stack() -> None:
    code = (
        "import sys, worker.runtime.metrics, worker.runtime.runner, worker.runtime.stages, "
        "worker.ops.quality.calibrate, worker.ops.export; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_package_is_listed_for_installation() -> None:
    """A package missing from pyproject's list is absent from a wheel, though an editable install hides that."""
    tomllib = pytest.importorskip("tomllib")

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("worker", *p.parent.relative_to(PACKAGE).parts)) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
