"""The package keeps its boundaries (worker/docs/layout.md):

- one import direction between the parts: contracts <- model <- runtime <- ops/devtools <- cli;
- inside runtime, the loop (the modules at its top) imports no client library and none of the
  folders that adapt them; `kafka/` and `postgres/` do not import each other; each client library
  is imported only by the folder that adapts it (and `wiring`, which builds every real part);
- only the model (and the benchmarks) import torch; no import cycles; no module over 450 lines.

Read from the source with `ast`, so a wrong import fails here before it turns into a cycle or drags
a client library into the loop.
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
    "cli": {"cli", "contracts", "runtime", "ops", "devtools", "settings", "logs"},
    "settings": {"settings"},
    "logs": set(),
    "__main__": {"cli"},
    "__init__": set(),
}
TORCH_ALLOWED = {"model", "devtools"}  # the classifier owns the model; the benchmarks time it
# The runtime's folders; the loop is every module at the top of runtime/ but `wiring`.
ADAPTERS = {"kafka", "postgres", "service"}
# Client libraries, and the runtime folder that adapts each (wiring builds them all; ops and devtools
# are outside the runtime and use what they need).
CLIENTS = {
    "kafka": "kafka",
    "sqlalchemy": "postgres",
    "alembic": "postgres",
    "psycopg2": "postgres",
    "prometheus_client": "service",
    "http": "service",
    "urllib": "kafka",  # the Schema Registry check
    "socket": "kafka",  # the broker probe
}
MAX_LINES = 450


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


def runtime_place(module: str) -> str | None:
    """'loop', 'wiring', or the adapter folder, for a module under runtime; None elsewhere."""
    parts = module.split(".")
    if parts[0] != "runtime" or len(parts) < 2 or parts[1] == "__init__":
        return "loop" if parts[:2] == ["runtime", "__init__"] else None
    if parts[1] in ADAPTERS:
        return parts[1]
    return "wiring" if parts[1] == "wiring" else "loop"


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_follow_the_layers(module: str) -> None:
    part = module.split(".")[0]
    imported = imports_of(modules()[module])
    used = {name.split(".")[1] for name in imported if name.startswith("worker.") and len(name.split(".")) > 1}
    assert used <= ALLOWED[part], f"{module} imports {sorted(used - ALLOWED[part])}"
    if part not in TORCH_ALLOWED:
        assert not {n.split(".")[0] for n in imported} & {"torch", "transformers"}, module


def runtime_violations(module: str, imported: set[str]) -> list[str]:
    """What `module` imports against the runtime's rules (empty when it keeps them)."""
    place = runtime_place(module)
    if place is None or place == "wiring":
        return []
    problems = []
    for name in imported:
        top = name.split(".")[0]
        if top in CLIENTS and CLIENTS[top] != place:
            problems.append(f"{name} (a client library of runtime/{CLIENTS[top]}/)")
        if name.startswith("worker.runtime."):
            target = runtime_place(name.removeprefix("worker."))
            if target == "wiring" and place != "service":
                problems.append(f"{name} (only the service around the process may use wiring)")
            elif place == "loop" and target in ADAPTERS:
                problems.append(f"{name} (the loop sees the outside world only through its ports)")
            elif {place, target} == {"kafka", "postgres"}:
                problems.append(f"{name} (kafka/ and postgres/ do not import each other)")
    return sorted(problems)


@pytest.mark.parametrize("module", sorted(m for m in modules() if runtime_place(m)))
def test_the_runtime_keeps_its_boundaries(module: str) -> None:
    assert runtime_violations(module, imports_of(modules()[module])) == []


def test_the_boundary_rule_catches_a_loop_that_imports_a_client(tmp_path: Path) -> None:
    """The rule itself: the imports a loop module must never have are reported."""
    leaky = tmp_path / "runner.py"
    leaky.write_text(
        "from kafka import KafkaConsumer\nimport sqlalchemy\nfrom http.server import HTTPServer\n"
        "from worker.runtime.postgres.store import ResultStore\n"
    )
    assert runtime_violations("runtime.runner", imports_of(leaky)) == [
        "http.server (a client library of runtime/service/)",
        "http.server.HTTPServer (a client library of runtime/service/)",
        "kafka (a client library of runtime/kafka/)",
        "kafka.KafkaConsumer (a client library of runtime/kafka/)",
        "sqlalchemy (a client library of runtime/postgres/)",
        "worker.runtime.postgres.store (the loop sees the outside world only through its ports)",
        "worker.runtime.postgres.store.ResultStore (the loop sees the outside world only through its ports)",
    ]
    assert runtime_violations("runtime.kafka.relay", imports_of(leaky))  # kafka/ may not use postgres/ either


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


def test_no_module_is_over_450_lines() -> None:
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def loaded_by(imports: list[str], watched: tuple[str, ...]) -> list[str]:
    """Which of `watched` a fresh interpreter has loaded after importing `imports`."""
    code = f"import sys, {', '.join(imports)}; print(sorted(m for m in {watched!r} if m in sys.modules))"
    return ast.literal_eval(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


def test_the_loop_and_the_quality_tools_load_without_the_model_stack_or_a_client() -> None:
    loop = sorted(f"worker.{m}" for m in modules() if runtime_place(m) == "loop" and not m.endswith("__init__"))
    tools = ["worker.runtime.service.metrics", "worker.ops.quality.calibrate", "worker.ops.export"]
    assert loaded_by([*loop, *tools], ("torch", "transformers")) == []
    assert loaded_by(loop, ("kafka", "sqlalchemy", "alembic", "prometheus_client")) == []


def test_every_package_is_listed_for_installation() -> None:
    """A package missing from pyproject's list is absent from a wheel, though an editable install hides that."""
    tomllib = pytest.importorskip("tomllib")

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("worker", *p.parent.relative_to(PACKAGE).parts)) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
