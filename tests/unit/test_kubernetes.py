"""The Kubernetes manifests: every overlay renders (`kubectl kustomize`), validates strictly against a
current Kubernetes, passes checkov (skips only where the manifest gives a reason), meets Pod Security
"restricted", and agrees with the worker's settings, its alert rules and its probes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.scanners import checkov_report
from worker.settings import Settings

FOLDER = Path(__file__).resolve().parents[2] / "worker" / "ops" / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (FOLDER / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
KUBERNETES = "1.33.0"
CUSTOM = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}  # CRDs: kubernetes-validate has no schema for them
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: the overlays are rendered with `kubectl kustomize`"
)


def rendered(overlay: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(FOLDER / "overlays" / overlay)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def pods(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in documents if d["kind"] in ("StatefulSet", "Job")]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates_strictly(overlay: str) -> None:
    documents = rendered(overlay)
    for document in documents:
        if document["kind"] not in CUSTOM:
            kubernetes_validate.validate(document, KUBERNETES, strict=True)
    assert {d["metadata"]["namespace"] for d in documents} == {"feedback-triage"}


def test_the_overlays_are_the_documented_ones() -> None:
    assert OVERLAYS == ["cpu", "cpu-operators", "gpu"]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_meet_pod_security_restricted(overlay: str) -> None:
    for pod in pods(rendered(overlay)):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
        assert not any("hostPath" in volume for volume in pod.get("volumes", []))


@needs_kubectl
def test_cpu_and_gpu_workers_have_disjoint_selectors_and_names() -> None:
    cpu, gpu = rendered("cpu"), rendered("gpu")
    names = lambda docs: {(d["kind"], d["metadata"]["name"]) for d in docs}  # noqa: E731
    assert not names(cpu) & names(gpu)  # both overlays can share a namespace
    for kind in ("StatefulSet", "PodDisruptionBudget"):
        [one], [other] = of_kind(cpu, kind), of_kind(gpu, kind)
        a, b = one["spec"]["selector"]["matchLabels"], other["spec"]["selector"]["matchLabels"]
        assert a["app.kubernetes.io/component"] == "cpu" and b["app.kubernetes.io/component"] == "gpu"
    [service] = of_kind(gpu, "Service")
    [statefulset] = of_kind(gpu, "StatefulSet")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "gpu"
    [worker] = statefulset["spec"]["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1


@needs_kubectl
@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_workers_probe_drain_keep_their_member_id_bound_their_cache_and_read_secrets_from_files(
    overlay: str,
) -> None:
    documents = rendered(overlay)
    [config] = of_kind(documents, "ConfigMap")
    [statefulset] = of_kind(documents, "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(config["data"]["TRIAGE_SHUTDOWN_GRACE_S"])
    [worker] = pod["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["TRIAGE_KAFKA_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert mounts["secrets"] == config["data"]["TRIAGE_SECRETS_DIR"]
    # The startup probe waits for the process, never for an outage (which /readyz reports).
    assert worker["startupProbe"]["httpGet"]["path"] == worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert not any(k.endswith(("_URL", "PASSWORD")) for k in env)  # secrets only from the mounted files
    # Everything the process writes is on a bounded volume: the cache claim and a sized /tmp.
    assert mounts["cache"] == "/cache" and config["data"]["HF_HOME"].startswith("/cache/")
    assert config["data"]["TRIAGE_ONNX_CACHE_DIR"].startswith("/cache/")
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "cache" and claim["spec"]["resources"]["requests"]["storage"]
    [tmp] = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert mounts["tmp"] == "/tmp" and tmp["emptyDir"]["sizeLimit"]
    assert of_kind(documents, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1


@needs_kubectl
def test_the_configmap_sets_only_real_settings() -> None:
    [config] = of_kind(rendered("cpu"), "ConfigMap")
    data = config["data"]
    known = {f"TRIAGE_{name.upper()}" for name in Settings.model_fields} | {"TRIAGE_SECRETS_DIR"}
    assert {k for k in data if k.startswith("TRIAGE_")} <= known
    Settings(**{k.removeprefix("TRIAGE_").lower(): v for k, v in data.items() if k in known - {"TRIAGE_SECRETS_DIR"}})


@needs_kubectl
def test_the_migration_job_is_named_after_the_release_and_uses_the_workers_settings() -> None:
    for overlay, name in (("cpu", "triage-migrate-0.1.0"), ("gpu", "triage-migrate-0.1.0-gpu")):
        documents = rendered(overlay)
        [job] = of_kind(documents, "Job")
        [config] = of_kind(documents, "ConfigMap")
        assert job["metadata"]["name"] == name  # a new release is a new Job: its template cannot change
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["migrate"]
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        [statefulset] = of_kind(documents, "StatefulSet")
        assert container["image"] == statefulset["spec"]["template"]["spec"]["containers"][0]["image"]


@needs_kubectl
def test_the_operator_objects_point_at_what_the_overlay_renders() -> None:
    documents = rendered("cpu-operators")
    [monitor] = of_kind(documents, "ServiceMonitor")
    [service] = of_kind(documents, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The rules match job="feedback-triage": the ServiceMonitor gives its targets that job.
    assert {"action": "replace", "targetLabel": "job", "replacement": "feedback-triage"} in endpoint["relabelings"]
    [scaled] = of_kind(documents, "ScaledObject")
    [statefulset] = of_kind(documents, "StatefulSet")
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": statefulset["metadata"]["name"]
    }  # fmt: skip
    [trigger] = scaled["spec"]["triggers"]
    [config] = of_kind(documents, "ConfigMap")
    assert trigger["type"] == "kafka" and int(trigger["metadata"]["lagThreshold"]) > 0
    assert trigger["metadata"]["consumerGroup"] == config["data"]["TRIAGE_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["data"]["TRIAGE_INPUT_TOPIC"]
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    [rule] = of_kind(documents, "PrometheusRule")
    alerts = yaml.safe_load((FOLDER.parents[1] / "observability" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]


@needs_kubectl
def test_checkov_passes_every_rendered_overlay_skipping_only_with_reasons(tmp_path: Path) -> None:
    for overlay in OVERLAYS:
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(rendered(overlay)))
    report = checkov_report(["-d", str(tmp_path), "--framework", "kubernetes"])
    summary = report["summary"]
    assert summary["failed"] == 0, [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["passed"] > 100
    assert summary["skipped"] == len(report["results"]["skipped_checks"])
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped["check_id"]
