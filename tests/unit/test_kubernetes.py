"""The Kubernetes manifests validate against a current Kubernetes, and agree with the worker's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from worker.settings import Settings

FOLDER = Path(__file__).resolve().parents[2] / "worker" / "ops" / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in FOLDER.glob("*.yaml") if p.name != "kustomization.yaml")
KUBERNETES = "1.33.0"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((FOLDER / name).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_validates_strictly(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_kustomization_names_files_that_exist() -> None:
    assert all((FOLDER / name).is_file() for name in load("kustomization.yaml")["resources"])


def test_the_configmap_sets_only_real_settings() -> None:
    data = load("configmap.yaml")["data"]
    known = {f"TRIAGE_{name.upper()}" for name in Settings.model_fields} | {"TRIAGE_SECRETS_DIR"}
    assert {k for k in data if k.startswith("TRIAGE_")} <= known
    Settings(**{k.removeprefix("TRIAGE_").lower(): v for k, v in data.items() if k in known - {"TRIAGE_SECRETS_DIR"}})


@pytest.mark.parametrize("name", ["statefulset.yaml", "statefulset-gpu.yaml"])
def test_workers_drain_before_sigkill_keep_their_member_id_and_read_secrets_from_files(name: str) -> None:
    config = load("configmap.yaml")["data"]
    pod = load(name)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(config["TRIAGE_SHUTDOWN_GRACE_S"])
    [worker] = pod["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["TRIAGE_KAFKA_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert mounts["secrets"] == config["TRIAGE_SECRETS_DIR"]
    assert (worker["startupProbe"]["httpGet"]["path"], worker["livenessProbe"]["httpGet"]["path"]) == (
        "/readyz",
        "/healthz",
    )
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert not any(k.endswith(("_URL", "PASSWORD")) for k in env)  # secrets only from the mounted files


def test_the_migration_job_runs_migrate_with_the_same_settings_and_secrets() -> None:
    [container] = load("migrate-job.yaml")["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert container["envFrom"] == [{"configMapRef": {"name": "triage-worker"}}]
    assert container["volumeMounts"][0]["mountPath"] == load("configmap.yaml")["data"]["TRIAGE_SECRETS_DIR"]
