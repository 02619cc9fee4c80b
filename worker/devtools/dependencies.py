"""Dependencies: the locks that CI, the demo and the image install from, and the check of the newest
versions the ranges in pyproject.toml allow.

    python -m worker.devtools.dependencies install dev   # this venv: a lock's packages, then the project (CI, demo)
    python -m worker.devtools.dependencies install scan  # .venv/scan: checkov, in a venv of its own (TOOLS)
    python -m worker.devtools.dependencies lock          # regenerate every lock (uv pip compile, with hashes)
    python -m worker.devtools.dependencies newest        # newest allowed versions in a scratch venv: unit suite + mypy

It needs nothing but the standard library (and uv for `lock` and `newest`), so `install` runs in a
fresh venv before anything else is there.

`pip install .` takes the ranges in pyproject.toml; what CI, the demo and the image install is locked
here, every package with its version and hashes, for CPython 3.11 on Linux x86-64 (the CI machines',
the image's). Each lock is one install (LOCKS): `dev` for CI and development, `demo` for the README's
first command, `image` and `image-gpu` for the Dockerfile's CPU and GPU targets. `dev` is resolved
first and constrains the others, so a package has one version in all of them (a test holds that).
A tool the tests run as a program, whose own pins cannot share a venv with the project, gets a lock
and a venv of its own (TOOLS): checkov requires packaging under 24, and setuptools 77 (the build
backend this project's licence field needs) requires 24.2 or later.

torch is the one package whose build differs: the CPU locks take the CPU build (`torch==X+cpu`) from
the PyTorch CPU wheel index (TORCH_CPU_WHEELS, or `--torch-wheels DIR` where a machine keeps them on
disk), `image-gpu` the CUDA build from PyPI. An upgrade is a deliberate step: raise a range in
pyproject.toml (or leave it), run `lock`, run the suite, commit pyproject.toml and the locks together.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK_DIR = ROOT / "worker" / "ops" / "deploy" / "requirements"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
TORCH_CPU_WHEELS = "https://download.pytorch.org/whl/cpu/torch/"
BUILD_REQUIREMENTS = ["setuptools>=77"]  # the build backend, so `pip install --no-build-isolation -e .` is locked too
REGENERATE = "python -m worker.devtools.dependencies lock"


@dataclass(frozen=True)
class Lock:
    name: str
    extras: tuple[str, ...]
    torch_build: str  # "cpu": the PyTorch CPU wheel; "cuda": PyPI's
    purpose: str

    @property
    def path(self) -> Path:
        return LOCK_DIR / f"{self.name}.lock"


LOCKS = (
    Lock("dev", ("dev",), "cpu", "CI and development: `bash .ci/run`"),
    Lock("demo", ("local",), "cpu", "the README's demo command"),
    Lock("image", ("onnx",), "cpu", "the image's CPU target (worker/ops/deploy/Dockerfile)"),
    Lock("image-gpu", ("onnx",), "cuda", "the image's GPU target"),
)


@dataclass(frozen=True)
class ToolLock:
    """A program the tests run, locked and installed into a venv of its own, apart from the project."""

    name: str
    requirements: tuple[str, ...]
    venv: Path
    purpose: str

    @property
    def path(self) -> Path:
        return LOCK_DIR / f"{self.name}.lock"


TOOLS = (
    ToolLock(
        "scan",
        ("checkov>=3.2,<4",),
        ROOT / ".venv" / "scan",
        "checkov, which scans the Dockerfile and the rendered manifests in the tests",
    ),
)
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)


def pinned(lock: Path) -> dict[str, str]:
    """A lock's packages, by normalised name, with their versions."""
    return {normalise(name): version for name, version in REQUIREMENT.findall(lock.read_text())}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def torch_version(lock: Path = LOCK_DIR / "dev.lock") -> str:
    """The torch the CPU locks hold, without its build label: 2.13.0 for 2.13.0+cpu."""
    return pinned(lock)["torch"].split("+")[0]


def _uv() -> list[str]:
    found = shutil.which("uv")
    if found is None:
        raise SystemExit("uv is not installed: pip install uv (it is in the dev extra)")
    return [found]


def _uv_compile(inputs: list[str], out: Path) -> list[str]:
    """`uv pip compile` of `inputs` into `out`, with hashes, for the platform every lock is for."""
    return [
        *_uv(),
        "pip",
        "compile",
        *inputs,
        "--generate-hashes",
        "--python-version",
        PYTHON_VERSION,
        "--python-platform",
        PLATFORM,
        "--custom-compile-command",
        REGENERATE,
        "--output-file",
        str(out),
        "--quiet",
    ]


def compile_lock(lock: Lock, torch: str, torch_wheels: str, constraints: dict[str, str]) -> None:
    """Resolve `lock` with uv; `constraints` are the pins it must keep (by name: what they are)."""
    with tempfile.TemporaryDirectory() as scratch:
        inputs = {
            "build requirements": "\n".join(BUILD_REQUIREMENTS),
            "torch build": f"torch=={torch}+cpu" if lock.torch_build == "cpu" else f"torch=={torch}",
            **constraints,
        }
        files = {}
        for index, (what, text) in enumerate(inputs.items()):
            files[what] = Path(scratch, f"{index}.txt")
            files[what].write_text(text + "\n")
        command = _uv_compile(
            [
                "pyproject.toml",
                str(files.pop("build requirements")),
                *(arg for extra in lock.extras for arg in ("--extra", extra)),
                *(arg for path in files.values() for arg in ("--constraint", str(path))),
            ],
            lock.path,
        )
        if lock.torch_build == "cpu":
            command += ["--find-links", torch_wheels]
        subprocess.run(command, check=True, cwd=ROOT)
        text = lock.path.read_text()
        for index, what in enumerate(inputs):  # the "via" notes name each input by what it is, not its scratch path
            text = text.replace(str(Path(scratch, f"{index}.txt")), what)
    lock.path.write_text(f"# {lock.purpose}; CPython {PYTHON_VERSION}, Linux x86-64\n{text}")


def lock_all(torch: str, torch_wheels: str) -> None:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    dev, *others = LOCKS
    compile_lock(dev, torch, torch_wheels, {})
    locked = pinned(dev.path)
    for lock in others:  # every package as in dev; the GPU lock's torch (and its CUDA stack) aside
        same = {name: v for name, v in locked.items() if lock.torch_build == "cpu" or name != "torch"}
        compile_lock(lock, torch, torch_wheels, {"dev lock": "\n".join(f"{n}=={v}" for n, v in same.items())})
    for tool in TOOLS:
        compile_tool(tool)
    for each in (*LOCKS, *TOOLS):
        print(f"{each.path.relative_to(ROOT)}: {len(pinned(each.path))} packages ({each.purpose})")


def compile_tool(tool: ToolLock) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        wanted = Path(scratch, "requirements.in")
        wanted.write_text("\n".join(tool.requirements) + "\n")
        subprocess.run(_uv_compile([str(wanted)], tool.path), check=True, cwd=ROOT)
        text = tool.path.read_text().replace(str(wanted), "requirements")
    where = tool.venv.relative_to(ROOT)
    tool.path.write_text(f"# {tool.purpose}; in {where}; CPython {PYTHON_VERSION}, Linux x86-64\n{text}")


def install_tool(tool: ToolLock) -> None:
    """A fresh venv at `tool.venv` with every package of its lock, at its version and hash."""
    shutil.rmtree(tool.venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tool.venv)], check=True)
    python = str(tool.venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r", str(tool.path)], check=True
    )
    subprocess.run([python, "-m", "pip", "check"], check=True)


def install(lock: Lock, torch_wheels: str) -> None:
    """Into the running venv: every package of `lock` at its version and hash, then this project
    (editable, built with the locked setuptools), then `pip check`."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps"]
    blocks = lock_blocks(lock.path)
    with tempfile.TemporaryDirectory() as scratch:
        rest, torch = Path(scratch, "rest.txt"), Path(scratch, "torch.txt")
        rest.write_text("".join(block for name, block in blocks if name != "torch"))
        torch.write_text("".join(block for name, block in blocks if name == "torch"))
        subprocess.run([*pip, "-r", str(rest)], check=True)
        # The CPU build is on the PyTorch index, not PyPI. Asked only where pip's own configuration
        # does not find it: every unreachable index pip is given costs each package retries.
        if subprocess.run([*pip, "-r", str(torch)], stderr=subprocess.DEVNULL).returncode != 0:
            print(f"torch: from {torch_wheels}", file=sys.stderr)
            subprocess.run([*pip, "--find-links", torch_wheels, "-r", str(torch)], check=True)
    subprocess.run([*pip[:5], "--no-deps", "--no-build-isolation", "--editable", str(ROOT)], check=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "pip", "check"], check=True)


def lock_blocks(lock: Path) -> list[tuple[str, str]]:
    """A lock as (package, its requirement lines with hashes and notes), in order."""
    blocks: list[tuple[str, str]] = []
    for line in lock.read_text().splitlines(keepends=True):
        found = REQUIREMENT.match(line)
        if found:
            blocks.append((normalise(found[1]), line))
        elif blocks:
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + line)
    return blocks


def newest(torch_wheels: str, keep: bool) -> int:
    """Install the newest versions pyproject.toml allows (torch: the lock's CPU build) into a scratch
    venv; run mypy and the unit suite there; print what differs from the lock. Returns their status."""
    scratch = Path(tempfile.mkdtemp(prefix="triage-newest-"))
    venv = scratch / "venv"
    python = venv / "bin" / "python"
    try:
        subprocess.run([*_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
        pins = scratch / "torch.txt"
        pins.write_text(f"torch=={torch_version()}+cpu\n")
        subprocess.run(
            [
                *_uv(),
                "pip",
                "install",
                "--quiet",
                "--python",
                str(python),
                "--resolution",
                "highest",
                "--find-links",
                torch_wheels,
                "--override",
                str(pins),
                "-e",
                f"{ROOT}[dev]",
            ],
            check=True,
        )
        frozen = subprocess.run(
            [*_uv(), "pip", "freeze", "--python", str(python)], check=True, capture_output=True, text=True
        ).stdout
        locked = pinned(LOCK_DIR / "dev.lock")
        now = {normalise(n): v for n, v in REQUIREMENT.findall(frozen)}
        moved = sorted((name, locked[name], v) for name, v in now.items() if name in locked and locked[name] != v)
        print(f"{len(moved)} packages newer than the lock:")
        for name, old, new in moved:
            print(f"  {name} {old} -> {new}")
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"VIRTUAL_ENV": str(venv)}
        checks = [
            [str(python), "-m", "mypy"],
            [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not integration and not model"],
        ]
        failed = [" ".join(c[2:]) for c in checks if subprocess.run(c, cwd=ROOT, env=env).returncode != 0]
        print(f"newest allowed versions: {'FAILED ' + ', '.join(failed) if failed else 'mypy and the unit suite pass'}")
        return 1 if failed else 0
    finally:
        if keep:
            print(f"kept {venv}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.devtools.dependencies", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--torch-wheels",
        default=os.environ.get("TRIAGE_TORCH_WHEELS", TORCH_CPU_WHEELS),
        help=f"where torch's CPU wheels are: a folder or an index page (default: {TORCH_CPU_WHEELS})",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    into = verbs.add_parser("install", help="install a lock, then this project, into the running venv")
    into.add_argument("lock", choices=[lock.name for lock in (*LOCKS, *TOOLS)])
    lock = verbs.add_parser("lock", help="regenerate every lock from pyproject.toml")
    lock.add_argument("--torch", help="the torch release to lock (default: the one the dev lock holds)")
    check = verbs.add_parser("newest", help="the newest allowed versions in a scratch venv: mypy and the unit suite")
    check.add_argument("--keep", action="store_true", help="keep the scratch venv")
    args = parser.parse_args(argv)
    if args.verb == "install":
        tool = next((tool for tool in TOOLS if tool.name == args.lock), None)
        if tool is not None:
            install_tool(tool)
        else:
            install(next(lock for lock in LOCKS if lock.name == args.lock), args.torch_wheels)
        return 0
    if args.verb == "lock":
        lock_all(args.torch or torch_version(), args.torch_wheels)
        return 0
    return newest(args.torch_wheels, args.keep)


if __name__ == "__main__":
    sys.exit(main())
