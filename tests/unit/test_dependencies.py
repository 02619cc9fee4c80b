"""The locks are whole, agree with each other and with pyproject.toml's ranges, and are what CI, the
demo and the GPU suite install; the licence is named where packaging tools look for it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from worker.devtools.dependencies import LOCKS, TOOLS, Lock, lock_blocks, normalise, pinned

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("lock", [*LOCKS, *TOOLS], ids=lambda lock: lock.name)
def test_every_locked_package_has_a_version_and_a_hash(lock: Lock) -> None:
    blocks = lock_blocks(lock.path)
    assert blocks, lock.path
    assert [name for name, block in blocks if "--hash=sha256:" not in block] == []


def requirements(*extras: str) -> list[Requirement]:
    """pyproject's dependencies and those of `extras`, the project's own extras followed."""
    project = PYPROJECT["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    wanted, seen = list(extras), set()
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in map(Requirement, project["optional-dependencies"][extra]):
            if normalise(requirement.name) == normalise(project["name"]):
                wanted += requirement.extras
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize("lock", LOCKS, ids=lambda lock: lock.name)
def test_each_lock_satisfies_the_ranges_in_pyproject(lock: Lock) -> None:
    versions = pinned(lock.path)
    for requirement in requirements(*lock.extras):
        name = normalise(requirement.name)
        assert name in versions, f"{lock.name} lacks {name}"
        assert requirement.specifier.contains(versions[name], prereleases=True), (name, versions[name])


def test_the_locks_agree_on_every_package_they_share() -> None:
    dev = pinned(LOCKS[0].path)
    for lock in LOCKS[1:]:
        differ = {
            name: (dev[name], version)
            for name, version in pinned(lock.path).items()
            if name in dev and dev[name] != version and not (lock.torch_build == "cuda" and name == "torch")
        }
        assert differ == {}, lock.name


def test_torch_is_the_cpu_build_in_the_cpu_locks_and_the_same_release_on_the_gpu() -> None:
    torch = {lock.name: pinned(lock.path)["torch"] for lock in LOCKS}
    for lock in LOCKS:
        assert torch[lock.name].endswith("+cpu") == (lock.torch_build == "cpu"), torch
    assert len({version.split("+")[0] for version in torch.values()}) == 1, torch


def test_ci_and_the_readme_install_from_the_locks() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m worker.devtools.dependencies install dev" in ci
    for tool in TOOLS:  # each in its venv, with what it is for
        assert f"python -m worker.devtools.dependencies install {tool.name}" in ci
        assert all(normalise(r.split(">")[0].split("=")[0]) in pinned(tool.path) for r in tool.requirements)
    assert "pip install" not in ci  # nothing beside the lock
    readme = (ROOT / "README.md").read_text()
    assert "python -m worker.devtools.dependencies install demo && triage-worker demo" in readme


def test_the_gpu_suite_carries_the_locks_versions() -> None:
    script = ROOT / "worker" / "devtools" / "bench" / "gpu_suite.sh"
    assert not re.search(r"[A-Za-z]==\d", script.read_text()), "a version written in the script, not read from the lock"
    carried = subprocess.run(["bash", str(script), "pins"], capture_output=True, text=True, check=True).stdout.split()
    dev = pinned(LOCKS[0].path)
    assert carried, "nothing carried"
    for pin in carried:
        name, version = pin.split("==")
        assert dev[normalise(name)] == version, pin


def test_the_licence_is_in_the_package_and_named_in_pyproject() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["worker/LICENSE"]
    text = (ROOT / "worker" / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
