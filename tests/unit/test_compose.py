"""docker-compose.yml cannot run here (no engine), so check its shape and its settings."""

from pathlib import Path

import pytest
import yaml

from worker.settings import Settings

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_services_and_images() -> None:
    assert {"kafka", "kafka-init", "postgres", "migrate", "worker", "worker-gpu"} <= set(SERVICES)
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["kafka-init"]["image"] == SERVICES["kafka"]["image"]
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert "controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    for name, target in (("migrate", "cpu"), ("worker", "cpu"), ("worker-gpu", "gpu")):
        build = SERVICES[name]["build"]
        assert build["dockerfile"] == "worker/ops/deploy/Dockerfile" and build["target"] == target
        assert (Path(__file__).resolve().parents[2] / build["dockerfile"]).is_file()
        # The image writes only to the cache volume and /tmp: its root filesystem is read-only.
        assert SERVICES[name]["read_only"] is True and SERVICES[name]["tmpfs"] == ["/tmp"]
        assert "model-cache:/cache" in SERVICES[name]["volumes"]
    assert SERVICES["migrate"]["command"] == ["migrate"] and SERVICES["worker"]["command"] == ["run"]


@pytest.mark.parametrize("name", ["kafka", "postgres", "worker", "worker-gpu"])
def test_health_checks(name: str) -> None:
    assert SERVICES[name]["healthcheck"]["test"]


def test_start_order() -> None:
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker", "worker-gpu"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["kafka-init"]["condition"] == "service_completed_successfully"


def test_gpu_worker_is_an_optional_profile_with_a_device_reservation() -> None:
    gpu = SERVICES["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["TRIAGE_DEVICE"] == "cuda"
    assert "profiles" not in SERVICES["worker"]


def test_every_triage_variable_is_a_real_setting() -> None:
    fields = {f"TRIAGE_{name.upper()}" for name in Settings.model_fields}
    seen = set()
    for service in SERVICES.values():
        for key in service.get("environment") or {}:
            if key.startswith("TRIAGE_"):
                seen.add(key)
                assert key in fields, f"{key} is not a setting"
    assert {"TRIAGE_KAFKA_BOOTSTRAP_SERVERS", "TRIAGE_DATABASE_URL", "TRIAGE_MODEL", "TRIAGE_DEVICE"} <= seen


def test_topics_created_are_the_ones_the_worker_uses() -> None:
    script = SERVICES["kafka-init"]["command"][0]
    defaults = Settings.model_fields
    for field in ("input_topic", "escalation_topic", "dead_letter_topic"):
        assert f"{defaults[field].default}:" in script
    assert SERVICES["worker"]["environment"]["TRIAGE_INPUT_TOPIC"] == defaults["input_topic"].default


def test_no_secret_is_written_in_the_file() -> None:
    env = SERVICES["worker"]["environment"]
    assert "${POSTGRES_PASSWORD" in env["TRIAGE_DATABASE_URL"]
    assert "${POSTGRES_PASSWORD" in SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]


def test_no_default_secret_and_nothing_published_beyond_this_host() -> None:
    text = (Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text()
    assert ":-triage}" not in text and ":-admin}" not in text  # no fallback passwords
    assert "${POSTGRES_PASSWORD:?" in SERVICES["worker"]["environment"]["TRIAGE_DATABASE_URL"]
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
