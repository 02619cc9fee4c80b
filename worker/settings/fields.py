"""Fields: every `TRIAGE_*` setting, with its type, its default, what it means (its description, the
one place that says it) and the checks on it. worker/docs/settings.md's table is made from these."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.json_schema import JsonDict
from pydantic_settings import NoDecode

from worker.settings.durations import format_duration, parse_duration
from worker.settings.errors import SettingsError, describe
from worker.settings.kafka import KafkaSettings, split_credentials

TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def unset(word: str) -> JsonDict:
    """For a setting whose default is None: the word the docs give for what unset means (auto, off ...)."""
    return {"unset": word}


class Settings(KafkaSettings):
    """Every knob of the worker (the Kafka ones in KafkaSettings). Field `foo_bar` is read from `TRIAGE_FOO_BAR`."""

    # --- Postgres ----------------------------------------------------------------------------
    database_url: SecretStr = Field(
        SecretStr("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
        description="PostgreSQL URL (secret); `?sslmode=require` etc. pass through",
    )

    # --- Model and batching ------------------------------------------------------------------
    model: str = Field("sm3455/bert-mlm-ft", description="Hugging Face model id or local directory")
    model_revision: str | None = Field(
        None,
        description="a hub branch, tag or commit to pin `TRIAGE_MODEL` to; every row records the revision loaded "
        "(`sha:` hub commit, `dir:` content digest of a local directory)",
    )
    label_map: Annotated[dict[str, str] | None, NoDecode] = Field(
        None,
        description="override label mapping: `LABEL_0=negative,LABEL_1=positive` or JSON; keys are label names "
        "or indexes",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto` (CUDA if present), `cpu`, `cuda`")
    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="most events per micro-batch (one transaction, one commit) and per forward pass; unset: 64 on "
        "the CPU, 1024 on CUDA",
        json_schema_extra=unset("auto"),
    )
    max_batch_tokens: int | None = Field(
        None,
        ge=64,
        description="most padded tokens per forward pass; unset: 2048 on the CPU, 131072 on CUDA (measured, see "
        "Performance)",
        json_schema_extra=unset("auto"),
    )
    max_wait_ms: int = Field(50, ge=0, le=60_000, description="longest the first event of a batch waits for more")
    pipeline_depth: int = Field(
        3,
        ge=1,
        le=64,
        description="micro-batches in flight between poll and commit (decoding, on the model, being stored); when "
        "all are taken the worker pauses its partitions and keeps polling",
    )
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="worker processes `run` starts in the group (`--processes`); above 1 a supervisor forwards "
        "SIGTERM, serves their summed metrics on `TRIAGE_METRICS_PORT`, and exits 4 (stopping the others) if "
        "one dies",
    )
    torch_compile: bool = Field(
        False,
        description="`torch.compile` the model (dynamic shapes; the first batches of each new shape are slow while "
        "it compiles)",
    )
    engine: Literal["torch", "onnx", "onnx-int8"] = Field(
        "torch",
        description="what runs the forward pass: `torch`; or, on the CPU only, ONNX Runtime in fp32 (`onnx`) or "
        "with int8 weights (`onnx-int8`), both from the `onnx` extra. The engine is named in `worker_started`, "
        "in `triage_model_info` and in every result's `model` column (`MODEL [onnx-int8]`); its speed and "
        "accuracy are in Performance",
    )
    onnx_cache_dir: Path = Field(
        Path("~/.cache/triage-worker/onnx"),
        description="where the ONNX exports are kept, a folder per model revision, with the tokenizer and the "
        "timed pass costs; written once (a few seconds), then read at every start, which then loads neither torch "
        "nor transformers (1.5-2.3 s for `classify` here). Must be writable where an `onnx` engine runs",
    )
    truncation: Literal["head", "head_tail"] = Field(
        "head_tail",
        description="a text longer than the model takes keeps its first 128 and last 382 word pieces "
        "(`head_tail`, scaled for other lengths) or its first 510 (`head`); measured in Model quality",
    )
    calibration: str = Field(
        "auto",
        description="the calibration from `triage-worker calibrate`: `auto` reads `triage-calibration.json` beside "
        "a model that is a local directory, if present; a path reads that file (it must exist); `off` uses none",
    )

    # --- Triage ------------------------------------------------------------------------------
    low_confidence_threshold: float = Field(
        0.60,
        ge=0.0,
        le=1.0,
        description="a score under this is escalated as `low_confidence`; when unset, a threshold chosen by "
        "`calibrate` (if the calibration has one) applies instead",
    )
    audit_sample_rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="a share (0-1) of the items that are not escalated sent to the reviewers too, with reason "
        "`audit`: what reviewers find there estimates the negatives the model misses among the items it lets "
        "through (not its accuracy on the stream; for that see `TRIAGE_AUDIT_SCOPE`, and "
        "[learning](learning.md#the-audit-sample))",
    )
    audit_scope: Literal["not_escalated", "all"] = Field(
        "not_escalated",
        description="what the audit sample is drawn from: `not_escalated` (the items the model let through: its "
        "misses) or `all` (every item; an escalated one drawn goes to the reviewers anyway and is only marked), "
        "so the audit items are a sample of the whole stream and `compare` gives each model's accuracy on it",
    )
    categories: Path | None = Field(
        None,
        description="the category file (JSON or YAML: the teams escalations are routed to; see "
        "[categories](categories.md)), read by the worker, `ack`, `evaluate`, `calibrate` and `finetune`; unset: "
        "no routing",
    )
    category_threshold: float = Field(
        0.80,
        ge=0.0,
        le=1.0,
        description="an item is routed to its category's team only at or above this category score; a "
        "threshold chosen by `calibrate --target-routed-accuracy` applies instead when this is not set",
    )
    category_f1_floor: float = Field(
        0.60,
        ge=0.0,
        le=1.0,
        description="a category whose held-out F1 (from `finetune` or `calibrate`) is under this is gated: its "
        "items stay in `general` until it passes",
    )
    shadow_model: str | None = Field(
        None,
        description="a candidate model (hub id or directory) that classifies every batch beside `TRIAGE_MODEL`; "
        "its answers go to `shadow_results` only, never to escalations (see [learning](learning.md))",
    )
    shadow_model_revision: str | None = Field(None, description="as `TRIAGE_MODEL_REVISION`, for the shadow model")
    shadow_calibration: str = Field("auto", description="as `TRIAGE_CALIBRATION`, for the shadow model")
    max_text_chars: int = Field(20_000, ge=1, description="longer texts are dead-lettered as `text_too_long`")
    dead_letter_max_ratio: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="the dead-letter guard trips when more than this share of the last 1,000 events was "
        "dead-lettered; `1` turns this limit off (see [faults](faults.md#the-dead-letter-guard))",
    )
    dead_letter_max_consecutive: int = Field(
        100, ge=0, description="... or when this many events in a row on one partition were; `0` turns this limit off"
    )
    store_text: Literal["all", "escalated", "none"] = Field(
        "all",
        description="where the text is kept (Postgres, escalations, results topic): `all`, `escalated` (only the "
        "items a human reads), `none`; `true`/`false` mean `all`/`none`",
    )

    # --- Behaviour ---------------------------------------------------------------------------
    relay_batch_size: int = Field(500, ge=1, description="outbox rows published per relay round")
    outbox_retention: timedelta | None = Field(
        timedelta(days=3),
        description="published outbox rows are deleted this long after publishing (`30m`, `72h`, `3d`, `2w`, or "
        "`off`); unpublished rows never are",
    )
    results_retention: timedelta | None = Field(
        None,
        description="results older than this are dropped a whole week at a time (`90d`, `26w`, ...); the rollups "
        "keep counting them",
        json_schema_extra=unset("`off`"),
    )
    retry_max_backoff_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="longest wait between retries while PostgreSQL or the broker is down (the worker keeps its "
        "partitions, paused, and commits nothing meanwhile)",
    )
    shutdown_grace_s: float = Field(
        30.0,
        gt=0,
        description="after SIGTERM, how long the drain may take before the batches in hand are abandoned (not "
        "committed)",
    )
    health_stall_s: float = Field(
        120.0,
        gt=0,
        description="`/healthz` answers 503 once the main loop has not polled for this long (it answers 200 during "
        "start-up and model loading), so a liveness probe restarts a wedged worker",
    )
    revoke_drain_s: float | None = Field(
        None,
        gt=0,
        description="before a rebalance moves partitions, how long the batches in hand may take to finish and be "
        "committed; the rest are never committed and the next owner replays them. Must be shorter than "
        "`TRIAGE_KAFKA_SESSION_TIMEOUT_MS`: the drain runs on kafka-python's loop that sends heartbeats",
        json_schema_extra=unset("half the session timeout, at most half the poll interval and the grace"),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="`DEBUG`, `INFO`, `WARNING`, `ERROR`"
    )
    metrics_port: int | None = Field(
        9108,
        ge=0,
        le=65535,
        description="port of `/metrics` (Prometheus), `/healthz` and `/readyz`; `0` picks a free port (logged as "
        "`metrics_listening`), `off` turns the endpoint off",
    )
    metrics_host: str = Field(
        "0.0.0.0",
        description="address `/metrics`, `/healthz` and `/readyz` listen on; `127.0.0.1` where only local clients "
        "should reach them. At most 16 connections at once, each dropped after 5 s of silence",
    )

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

    def category_threshold_is_explicit(self) -> bool:
        return "category_threshold" in self.model_fields_set

    def sqlalchemy_url(self) -> str:
        """The database URL with the psycopg2 driver named, as SQLAlchemy wants it."""
        url = self.database_url.get_secret_value()
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg2://" + url[len(prefix) :]
        return url

    def as_env(self, *, secrets: bool = True) -> dict[str, str]:
        """These settings as TRIAGE_* variables, to start a worker process with them; `secrets=False`
        leaves every secret out (the process reads them where this one did: see the supervisor)."""
        env = {}
        for name, value in self.model_dump().items():
            if name == "low_confidence_threshold" and not self.threshold_is_explicit():
                continue  # so that a calibration's threshold still applies in the child
            if not secrets and f"TRIAGE_{name.upper()}" in self.secret_variables():
                continue
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
                value = format_duration(value)
            env[f"TRIAGE_{name.upper()}"] = str(value)
        return env

    @classmethod
    def secret_variables(cls) -> set[str]:
        """The variables that hold secrets (the SecretStr settings): never logged, never copied into a
        child's environment."""
        return {
            f"TRIAGE_{name.upper()}"
            for name, field in cls.model_fields.items()
            if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))
        }

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with `changes` (a verb's options), validated exactly as the environment is:
        an invalid value raises SettingsError naming the setting (model_copy would let it through)."""
        values = {name: getattr(self, name) for name in self.model_fields_set} | changes
        try:
            return type(self).model_validate(values)
        except ValidationError as exc:
            raise SettingsError(describe(exc)) from None

    def secrets(self) -> list[str]:
        """Every secret value: the database password, the Kafka passwords, the registry's credentials."""
        from sqlalchemy.engine import make_url

        secret_fields = (self.kafka_sasl_password, self.kafka_ssl_password, self.schema_registry_url)
        found = [s.get_secret_value() for s in (*secret_fields, self.schema_registry_auth) if s]
        if self.schema_registry_url is not None:
            credentials = split_credentials(self.schema_registry_url.get_secret_value())[1]
            found += credentials.split(":", 1)[1:] if credentials else []
        if self.schema_registry_auth is not None:
            found += self.schema_registry_auth.get_secret_value().split(":", 1)[1:]
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
