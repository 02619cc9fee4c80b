"""Where the tests find checkov: its own venv (`python -m worker.devtools.dependencies install scan`,
which .ci/run does), else the PATH. Its pins cannot share the project's venv (see dependencies.TOOLS)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from worker.devtools.dependencies import TOOLS


def checkov() -> str:
    installed = TOOLS[0].venv / "bin" / "checkov"
    found = str(installed) if installed.is_file() else shutil.which("checkov")
    if found is None:
        pytest.skip("checkov is not installed: python -m worker.devtools.dependencies install scan")
    return found


def checkov_report(arguments: list[str]) -> dict[str, Any]:
    """checkov's JSON report, offline (no download of its extra policies), with the skipped checks and their reasons."""
    program = checkov()
    out = subprocess.run(
        [program, *arguments, "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        env={"PATH": str(Path(program).parent) + ":/usr/bin:/bin", "HOME": "/tmp", "LOG_LEVEL": "ERROR"},
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]
    report = json.loads(out.stdout)
    return report[0] if isinstance(report, list) else report  # type: ignore[no-any-return]
