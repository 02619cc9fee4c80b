"""Settings: the one configuration object, read from `TRIAGE_*` environment variables and `.env`.

Built once at start-up (`load_settings`) and passed down to every stage. Invalid values fail
here, before any connection is opened, with a message that names the variable.
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class SettingsError(ValueError):
    """Raised when the environment holds an invalid configuration."""


TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
DURATION = re.compile(r"(\d+)\s*([mhdw])")
DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str) -> timedelta:
    """'30m', '72h', '3d' or '2w' -> a timedelta: the one reading of durations, for settings and
    command-line options alike. Anything else (or zero) raises ValueError."""
    match = DURATION.fullmatch(value.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expected a duration like 30m, 72h, 3d or 2w, got {value!r}")
    return timedelta(**{DURATION_UNITS[match.group(2)]: int(match.group(1))})


class Settings(BaseSettings):
    """Every knob of the worker. Field `foo_bar` is read from `TRIAGE_FOO_BAR`."""

    model_config = SettingsConfigDict(
        env_prefix="TRIAGE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    input_topic: str = "feedback.events"
    escalation_topic: str = "feedback.escalations"
    dead_letter_topic: str = "feedback.deadletter"
    results_topic: str | None = None  # every stored result as triage-result.v1; unset: not published
    group_id: str = "feedback-triage"
    # Input headers copied onto the escalation and result messages (W3C trace context by default).
    passthrough_headers: Annotated[tuple[str, ...], NoDecode] = ("traceparent", "tracestate")
    # Where to check the schema ids of framed values (Confluent wire format); unset: not checked.
    schema_registry_url: SecretStr | None = None  # secret: it may hold basic-auth credentials
    kafka_client_id: str = "feedback-triage-worker"
    kafka_auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    kafka_max_poll_interval_ms: int = Field(300_000, ge=1_000)
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000)
    kafka_max_message_bytes: int = Field(1_048_576, ge=1_024)
    # Static group membership (KIP-345): a restart within the session timeout keeps this member's
    # partitions instead of rebalancing the group. Stable per replica (a StatefulSet pod's name);
    # with --processes N each process gets "-0" ... "-(N-1)" appended.
    kafka_group_instance_id: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    # Security settings are passed straight through to kafka-python.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_password: SecretStr | None = None

    # --- Postgres ----------------------------------------------------------------------------
    database_url: SecretStr = SecretStr("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")

    # --- Model and batching ------------------------------------------------------------------
    model: str = "sm3455/bert-mlm-ft"
    model_revision: str | None = None  # a hub branch, tag or commit to pin TRIAGE_MODEL to; unset: the default branch
    label_map: Annotated[dict[str, str] | None, NoDecode] = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch_size: int | None = Field(None, ge=1, le=4096)  # None: chosen for the device (see model/encoding)
    max_batch_tokens: int | None = Field(None, ge=64)  # None: chosen for the device (see classifier)
    max_wait_ms: int = Field(50, ge=0, le=60_000)
    # Micro-batches between poll and commit (being decoded, classified or stored) before the
    # worker pauses its partitions; 3 keeps every stage busy.
    pipeline_depth: int = Field(3, ge=1, le=64)
    # Worker processes `triage-worker run` starts in the group (e.g. several feeding one GPU); see supervisor.
    processes: int = Field(1, ge=1, le=64)
    torch_compile: bool = False  # torch.compile the model (dynamic shapes); see worker/docs/performance.md
    # What runs the forward pass: torch; or, on the CPU, ONNX Runtime in fp32 ("onnx") or with int8
    # weights ("onnx-int8"; the `onnx` extra). See worker/docs/performance.md for speed and accuracy.
    engine: Literal["torch", "onnx", "onnx-int8"] = "torch"
    onnx_cache_dir: Path = Path("~/.cache/triage-worker/onnx")  # where the ONNX exports are kept, per model revision
    # How a text longer than the model takes is cut: its start, or its start and its end (see model/encoding).
    truncation: Literal["head", "head_tail"] = "head_tail"  # measured: see worker/docs/model-quality.md
    # The temperature (and threshold) from `triage-worker calibrate`: "auto" (beside a local model), a path, or "off".
    calibration: str = "auto"

    # --- Triage ------------------------------------------------------------------------------
    # Unset, a calibration's chosen threshold applies if it has one (see effective_threshold).
    low_confidence_threshold: float = Field(0.60, ge=0.0, le=1.0)
    # A share of the items not escalated that goes to the reviewers too, with reason `audit` (see runtime/triage).
    audit_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    # A candidate model run on every batch beside TRIAGE_MODEL; its answers go to shadow_results only.
    shadow_model: str | None = None
    shadow_model_revision: str | None = None
    shadow_calibration: str = "auto"  # as TRIAGE_CALIBRATION, for the shadow model
    max_text_chars: int = Field(20_000, ge=1)
    # The dead-letter guard (runtime/guard): stop consuming when more than this share of the last
    # 1,000 events, or this many in a row, were dead-lettered. 1 and 0 turn each limit off.
    dead_letter_max_ratio: float = Field(0.1, gt=0.0, le=1.0)
    dead_letter_max_consecutive: int = Field(100, ge=0)
    # Where the feedback text is kept: "all" (every result and escalation), "escalated" (only the
    # items a human reads), "none". true/false are read as all/none.
    store_text: Literal["all", "escalated", "none"] = "all"

    # --- Behaviour ---------------------------------------------------------------------------
    relay_batch_size: int = Field(500, ge=1)
    # Published outbox rows are deleted this long after publishing: "72h", "3d", "2w", or "off".
    outbox_retention: timedelta | None = timedelta(days=3)
    # Results (in weekly partitions) are dropped a whole week at a time once older than this; off: kept.
    results_retention: timedelta | None = None
    retry_max_backoff_s: float = Field(10.0, gt=0, le=300)
    shutdown_grace_s: float = Field(30.0, gt=0)
    # /healthz answers 503 when the main loop has not polled for this long (a liveness probe restarts it).
    health_stall_s: float = Field(120.0, gt=0)
    # Before a rebalance moves partitions, how long the batches in hand may take to finish (and be
    # committed); the rest are left to the next owner. Unset: half the poll interval, at most the grace.
    revoke_drain_s: float | None = Field(None, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # /metrics, /healthz and /readyz; 0 picks a free port (logged), "off" (or empty) turns them off.
    metrics_port: int | None = Field(9108, ge=0, le=65535)
    # The address they listen on: every interface (Prometheus and probes reach a container that way),
    # or 127.0.0.1 on a host where only local clients should.
    metrics_host: str = "0.0.0.0"

    @field_validator("store_text", mode="before")
    @classmethod
    def _store_text_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            return "all" if value else "none"
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
            return "all" if value.strip().lower() in ("true", "1", "yes") else "none"
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("outbox_retention", "results_retention", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().lower() in ("", "off", "none"):
                return None
            try:
                return parse_duration(value)
            except ValueError as exc:
                raise ValueError(f"{exc}, or off") from None
        return value

    @field_validator("results_topic", mode="before")
    @classmethod
    def _optional_topic(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _port_off(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "off", "none") else value

    @field_validator(
        "kafka_bootstrap_servers",
        "input_topic",
        "escalation_topic",
        "dead_letter_topic",
        "group_id",
        "model",
        "calibration",
    )
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("input_topic", "escalation_topic", "dead_letter_topic", "results_topic")
    @classmethod
    def _kafka_topic_name(cls, value: str | None) -> str | None:
        """A name Kafka refuses would fail every send of that kind, round after round: refuse it here."""
        if value is not None and not TOPIC_NAME.fullmatch(value):
            raise ValueError("a Kafka topic name is 1 to 249 of ASCII letters, digits, '.', '_' and '-'")
        return value

    @field_validator("passthrough_headers", mode="before")
    @classmethod
    def _header_names(cls, value: Any) -> Any:
        """A comma-separated list (`traceparent,tracestate,x-correlation-id`); empty: none."""
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("label_map", mode="before")
    @classmethod
    def _parse_label_map(cls, value: Any) -> Any:
        """Accept JSON (`{"LABEL_0": "negative"}`) or the short form `LABEL_0=negative,LABEL_1=positive`."""
        if isinstance(value, str):
            if not value.strip():
                return None
            if value.lstrip().startswith("{"):
                return json.loads(value)
            pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("expected JSON or 'RAW=negative,RAW=positive'")
            return {raw.strip(): norm.strip() for raw, norm in pairs}
        return value

    @field_validator("label_map")
    @classmethod
    def _label_map_targets(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            bad = sorted({v for v in value.values() if v.lower() not in ("positive", "negative")})
            if bad:
                raise ValueError(f"values must be 'positive' or 'negative', got {bad}")
            value = {k: v.lower() for k, v in value.items()}
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not url.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        authority = url.split("://", 1)[1].split("/", 1)[0]
        if authority.count("@") > 1:  # said without the URL, which holds the password
            raise ValueError("has an unencoded '@' in its user or password: write it as %40")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        topics = [self.input_topic, self.escalation_topic, self.dead_letter_topic, self.results_topic]
        named = [t for t in topics if t]
        if len(set(named)) != len(named):
            raise ValueError("input, escalation, dead-letter and results topics must be different")
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError("SASL needs TRIAGE_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD")
        if self.revoke_drain_s is not None and self.revoke_drain_s * 1000 >= self.kafka_session_timeout_ms:
            raise ValueError(
                "TRIAGE_REVOKE_DRAIN_S must be shorter than TRIAGE_KAFKA_SESSION_TIMEOUT_MS: the drain runs in "
                "kafka-python's rebalance listener, on the loop that sends heartbeats, so the group expires a "
                "worker that drains longer (raise the session timeout for a longer drain)"
            )
        return self

    # --- Derived values ----------------------------------------------------------------------
    def revoke_drain_seconds(self) -> float:
        """The revoke drain deadline: well inside the session timeout (no heartbeat goes out while the
        listener drains) and the poll interval, and no longer than the shutdown grace."""
        if self.revoke_drain_s is not None:
            return self.revoke_drain_s
        return min(self.kafka_session_timeout_ms / 2000, self.kafka_max_poll_interval_ms / 2000, self.shutdown_grace_s)

    def threshold_is_explicit(self) -> bool:
        """Whether TRIAGE_LOW_CONFIDENCE_THRESHOLD was given (it then wins over a calibration's)."""
        return "low_confidence_threshold" in self.model_fields_set

    def sqlalchemy_url(self) -> str:
        """The database URL with the psycopg2 driver named, as SQLAlchemy wants it."""
        url = self.database_url.get_secret_value()
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg2://" + url[len(prefix) :]
        return url

    def kafka_common(self) -> dict[str, Any]:
        """Connection and security options shared by every kafka-python client."""
        config: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.kafka_bootstrap_servers.split(",")],
            "client_id": self.kafka_client_id,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            config["sasl_mechanism"] = self.kafka_sasl_mechanism
            config["sasl_plain_username"] = self.kafka_sasl_username
            assert self.kafka_sasl_password is not None
            config["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, f"kafka_{name}")
            if value:
                config[name] = value
        if self.kafka_ssl_password:
            config["ssl_password"] = self.kafka_ssl_password.get_secret_value()
        return config

    def as_env(self) -> dict[str, str]:
        """These settings as TRIAGE_* variables, to start a worker process with them (secrets included)."""
        env = {}
        for name, value in self.model_dump().items():
            if name == "low_confidence_threshold" and not self.threshold_is_explicit():
                continue  # so that a calibration's threshold still applies in the child
            if value is None:
                if name == "metrics_port":
                    env["TRIAGE_METRICS_PORT"] = "off"
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, timedelta):
                value = f"{int(value.total_seconds() // 60)}m"
            env[f"TRIAGE_{name.upper()}"] = str(value)
        return env

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with `changes` (a verb's options), validated exactly as the environment is:
        an invalid value raises SettingsError naming the setting (model_copy would let it through)."""
        values = {name: getattr(self, name) for name in self.model_fields_set} | changes
        try:
            return type(self).model_validate(values)
        except ValidationError as exc:
            raise SettingsError(describe(exc)) from None

    def secrets(self) -> list[str]:
        """Every secret value: the database password and the Kafka passwords."""
        from sqlalchemy.engine import make_url

        found = [
            s.get_secret_value()
            for s in (self.kafka_sasl_password, self.kafka_ssl_password, self.schema_registry_url)
            if s
        ]
        try:
            found.append(make_url(self.sqlalchemy_url()).password or "")
        except Exception:  # noqa: BLE001 - an unparsable URL: mask the whole of it
            found.append(self.database_url.get_secret_value())
        return [s for s in found if s]

    def redact(self, text: str) -> str:
        """`text` with every secret value replaced by ***: for errors that quote a URL or a connection string."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    def safe_dump(self) -> dict[str, Any]:
        """Settings for a start-up log line; secrets stay masked (SecretStr dumps as '**********')."""
        dumped = self.model_dump(mode="json")
        dumped["database_url"] = "**********"
        return dumped


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, turning validation errors into one clear message.

    With TRIAGE_SECRETS_DIR, a setting can also come from a file of that folder named after its
    variable (`TRIAGE_DATABASE_URL`, any case), as Kubernetes and Docker mount secrets; a variable
    in the environment wins over the file."""
    secrets_dir = os.environ.get("TRIAGE_SECRETS_DIR")
    if secrets_dir is not None and not os.path.isdir(secrets_dir):
        raise SettingsError(f"invalid configuration:\n  TRIAGE_SECRETS_DIR: {secrets_dir!r} is not a folder")
    try:
        return Settings(**overrides, _secrets_dir=secrets_dir)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """Validation errors as one line per setting, each named by its variable."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "settings"
        name = f"TRIAGE_{field.upper()}" if error["loc"] else "settings"
        lines.append(f"  {name}: {error['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)
