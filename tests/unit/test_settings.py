import json
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.settings import Settings, SettingsError, format_duration, load_settings, parse_duration


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # no stray .env
    import os

    for key in list(os.environ):
        if key.startswith("TRIAGE_"):
            monkeypatch.delenv(key)


def test_defaults_follow_the_issue_and_the_model_cards() -> None:
    s = load_settings()
    assert (s.input_topic, s.escalation_topic, s.dead_letter_topic) == (
        "feedback.events",
        "feedback.escalations",
        "feedback.deadletter",
    )
    assert s.model == "sm3455/bert-mlm-ft"
    assert s.low_confidence_threshold == 0.60
    assert s.device == "auto" and s.store_text == "all"


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / ".env").write_text("TRIAGE_MAX_BATCH_SIZE=7\nTRIAGE_GROUP_ID=from-dotenv\n")
    monkeypatch.setenv("TRIAGE_GROUP_ID", "from-env")
    monkeypatch.setenv("TRIAGE_LABEL_MAP", "bad=negative, good=Positive")
    s = load_settings()
    assert s.max_batch_size == 7 and s.group_id == "from-env"
    assert s.label_map == {"bad": "negative", "good": "positive"}


def test_label_map_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_LABEL_MAP", '{"LABEL_0": "negative", "LABEL_1": "positive"}')
    assert load_settings().label_map == {"LABEL_0": "negative", "LABEL_1": "positive"}


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("TRIAGE_LOW_CONFIDENCE_THRESHOLD", "1.5", "TRIAGE_LOW_CONFIDENCE_THRESHOLD"),
        ("TRIAGE_DEVICE", "tpu", "TRIAGE_DEVICE"),
        ("TRIAGE_MAX_BATCH_SIZE", "0", "TRIAGE_MAX_BATCH_SIZE"),
        ("TRIAGE_MAX_WAIT_MS", "soon", "TRIAGE_MAX_WAIT_MS"),
        ("TRIAGE_LABEL_MAP", "LABEL_0=angry", "TRIAGE_LABEL_MAP"),
        ("TRIAGE_DATABASE_URL", "mysql://x", "TRIAGE_DATABASE_URL"),
        ("TRIAGE_ESCALATION_TOPIC", "feedback.events", "must be different"),
        ("TRIAGE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL", "SASL"),
        ("TRIAGE_STORE_TEXT", "maybe", "TRIAGE_STORE_TEXT"),
    ],
)
def test_invalid_values_fail_with_the_variable_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=fragment):
        load_settings()


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", "postgresql://app:hunter2@db/app")
    monkeypatch.setenv("TRIAGE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TRIAGE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("TRIAGE_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("TRIAGE_KAFKA_SASL_PASSWORD", "s3cret-pw")
    s = load_settings()
    for shown in (repr(s), str(s), str(s.safe_dump())):
        assert "hunter2" not in shown and "s3cret-pw" not in shown
    assert s.sqlalchemy_url() == "postgresql+psycopg2://app:hunter2@db/app"
    common = s.kafka_common()
    assert common["sasl_plain_password"] == "s3cret-pw" and common["security_protocol"] == "SASL_SSL"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("72h", timedelta(hours=72)), ("3d", timedelta(days=3)), ("2w", timedelta(weeks=2)),
     ("30m", timedelta(minutes=30)), ("off", None), ("", None)],
)  # fmt: skip
def test_outbox_retention_durations(raw: str, expected: timedelta | None) -> None:
    assert Settings(outbox_retention=raw).outbox_retention == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", "all"), ("false", "none"), ("Escalated", "escalated"), (True, "all")]
)
def test_store_text_choices(raw: object, expected: str) -> None:
    assert Settings(store_text=raw).store_text == expected


def test_bad_retention_and_shared_results_topic_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_OUTBOX_RETENTION", "3 days")
    with pytest.raises(SettingsError, match="TRIAGE_OUTBOX_RETENTION"):
        load_settings()
    monkeypatch.delenv("TRIAGE_OUTBOX_RETENTION")
    monkeypatch.setenv("TRIAGE_RESULTS_TOPIC", "feedback.escalations")
    with pytest.raises(SettingsError, match="results topics must be different"):
        load_settings()
    monkeypatch.delenv("TRIAGE_RESULTS_TOPIC")
    assert Settings(outbox_retention="2d").as_env()["TRIAGE_OUTBOX_RETENTION"] == "2d"


def test_the_revoke_drain_stays_inside_the_session_timeout() -> None:
    """No heartbeat goes out while the listener drains: a drain past the session timeout loses the member."""
    assert Settings(kafka_session_timeout_ms=10_000).revoke_drain_seconds() == 5.0  # was 30 s with the defaults
    with pytest.raises(ValueError, match="TRIAGE_KAFKA_SESSION_TIMEOUT_MS"):
        Settings(revoke_drain_s=12, kafka_session_timeout_ms=10_000)


def test_a_password_with_an_unencoded_at_sign_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(database_url="postgresql://triage:p@ss@db:5432/triage")
    assert "%40" in str(raised.value) and "p@ss" not in str(raised.value)


def test_redact_masks_every_secret() -> None:
    settings = Settings(database_url="postgresql://triage:s3cret%40x@db/triage", kafka_sasl_password="k-pass")
    said = settings.redact('could not translate host name "s3cret@x" to address; sasl k-pass refused')
    assert said == 'could not translate host name "***" to address; sasl *** refused'


@pytest.mark.parametrize("name", ["results/unwritable", "x" * 250, "has space"])
def test_a_topic_name_kafka_refuses_is_refused_at_start(name: str) -> None:
    with pytest.raises(SettingsError, match="TRIAGE_RESULTS_TOPIC"):
        load_settings(results_topic=name)


def test_the_supervisor_passes_a_childs_operator_exit_through() -> None:
    """Exit 3 (an unreadable batch: reset the offset) must reach the operator, not become a restart loop."""
    import tempfile
    import threading

    from worker.contracts.errors import ExitStatus
    from worker.runtime.service.supervisor import _wait

    class Child:
        def __init__(self, pid: int, code: int | None) -> None:
            self.pid, self.code = pid, code

        def poll(self) -> int | None:
            return self.code

        def send_signal(self, signal: int) -> None:
            self.code = 0

    with tempfile.TemporaryDirectory() as metrics_dir:
        assert _wait([Child(1, 3), Child(2, None)], threading.Event(), metrics_dir) == 3  # type: ignore[list-item]
        assert _wait([Child(3, 2), Child(4, None)], threading.Event(), metrics_dir) == 2  # type: ignore[list-item]
        assert _wait([Child(5, -9), Child(6, None)], threading.Event(), metrics_dir) == ExitStatus.CHILD_DIED  # type: ignore[list-item]


def test_settings_come_from_mounted_secret_files_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "TRIAGE_DATABASE_URL").write_text("postgresql://triage:from-file@db:5432/triage")
    (tmp_path / "triage_kafka_sasl_password").write_text("sasl-from-file")
    monkeypatch.setenv("TRIAGE_SECRETS_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.database_url.get_secret_value().endswith("from-file@db:5432/triage")
    assert (
        settings.kafka_sasl_password is not None and settings.kafka_sasl_password.get_secret_value() == "sasl-from-file"
    )
    assert "from-file" not in json.dumps(settings.safe_dump())
    monkeypatch.setenv("TRIAGE_DATABASE_URL", "postgresql://triage:from-env@db/triage")
    assert "from-env" in load_settings().database_url.get_secret_value()
    monkeypatch.setenv("TRIAGE_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="TRIAGE_SECRETS_DIR: .* is not a folder"):
        load_settings()


def test_each_supervised_process_gets_its_own_static_member_id() -> None:
    from worker.runtime.service.supervisor import member_of

    settings = Settings(kafka_group_instance_id="triage-worker-0")
    assert [member_of(settings, i) for i in range(2)] == [
        {"TRIAGE_KAFKA_GROUP_INSTANCE_ID": "triage-worker-0-0"},
        {"TRIAGE_KAFKA_GROUP_INSTANCE_ID": "triage-worker-0-1"},
    ]
    assert member_of(Settings(), 0) == {}
    with pytest.raises(ValidationError):
        Settings(kafka_group_instance_id="no spaces")


@pytest.mark.parametrize(
    ("text", "formatted"), [("90m", "90m"), ("120m", "2h"), ("72h", "3d"), ("14d", "2w"), ("3w", "3w")]
)
def test_durations_are_written_in_their_largest_unit_and_read_back(text: str, formatted: str) -> None:
    assert format_duration(parse_duration(text)) == formatted
    assert parse_duration(formatted) == parse_duration(text)
    assert Settings(outbox_retention=text).as_env()["TRIAGE_OUTBOX_RETENTION"] == formatted
