"""`run --processes N`: the supervisor judges each child's loop and model from the metrics files the
children write, and never copies a secret into a child's environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess

from worker.runtime.service.supervisor import LAST_POLL, MODEL, child_environment, guard_tripped, seen, stalled
from worker.settings import load_settings

CHILD = """
import time
from worker.runtime.service.metrics import Metrics
metrics = Metrics()
metrics.last_poll.set(time.time() - {age})
metrics.model_loaded.set({model})
metrics.guard_tripped.set({guard})
"""


def child(metrics_dir: Path, age: float, model: int = 1, guard: int = 0) -> int:
    """A process that writes what a worker child writes, then exits (its files stay: it is not marked dead)."""
    code = CHILD.format(age=age, model=model, guard=guard)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    assert process.wait(30) == 0
    return process.pid


def test_a_child_whose_loop_stopped_makes_healthz_fail_and_a_child_without_its_model_is_not_ready(
    tmp_path: Path,
) -> None:
    """A child that only sleeps answered 200 and 200 through the supervisor; now its loop's last poll says."""
    turning = child(tmp_path, age=1)
    asleep = child(tmp_path, age=500, model=0)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    children = seen(registry)
    assert children[turning][MODEL] == 1 and children[asleep][MODEL] == 0
    now = time.time()
    assert stalled(children, {turning}, now, after_s=120) is None
    verdict = stalled(children, {turning, asleep}, now, after_s=120)
    assert verdict is not None and list(verdict["main_loop_idle_s"]) == [str(asleep)]
    assert verdict["main_loop_idle_s"][str(asleep)] >= 499
    assert children[asleep][LAST_POLL] > 0 and not guard_tripped(registry)
    child(tmp_path, age=1, guard=1)
    assert guard_tripped(registry)


def test_a_child_reads_the_secrets_the_supervisor_read_and_none_is_copied_into_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "TRIAGE_DATABASE_URL").write_text("postgresql://triage:S3cretPass@db:5432/triage")
    monkeypatch.setenv("TRIAGE_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("TRIAGE_KAFKA_SASL_PASSWORD", "from-the-environment")
    monkeypatch.setenv("TRIAGE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TRIAGE_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("TRIAGE_KAFKA_SASL_USERNAME", "worker")
    settings = load_settings(processes=2)
    env = child_environment(settings, str(tmp_path / "metrics"))
    assert "TRIAGE_DATABASE_URL" not in env and not any("S3cretPass" in v for v in env.values())
    assert env["TRIAGE_SECRETS_DIR"] == str(secrets) and env["TRIAGE_PROCESSES"] == "1"
    assert env["TRIAGE_KAFKA_SASL_PASSWORD"] == "from-the-environment"  # as it came: the parent's own variable
    code = "from worker.settings import load_settings; print(load_settings().database_url.get_secret_value())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("S3cretPass@db:5432/triage")  # the child read the same file
