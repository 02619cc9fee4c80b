"""Kafka settings: the topics, the group and the client's connection and security (TRIAGE_KAFKA_*,
the topic names, the Schema Registry), with their checks; `Settings` (fields) extends them."""

from __future__ import annotations

import re
import urllib.parse
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def split_credentials(url: str) -> tuple[str, str | None]:
    """(the URL without its user part, 'user:password' or None). Raises ValueError for a URL that is not
    http(s)://host[:port][/path] (the message never quotes it: it may hold a password)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number (an '@' or ':' in the password must be %-encoded)") from None
    userinfo = None
    if parts.username is not None:
        userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), userinfo


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRIAGE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="comma-separated brokers")
    input_topic: str = Field("feedback.events", description="feedback events in")
    escalation_topic: str = Field("feedback.escalations", description="escalations out (key = event_id)")
    results_topic: str | None = Field(
        None,
        description="when set, every stored result goes out here as `triage-result.v1` (key = event_id), "
        "through the outbox",
    )
    dead_letter_topic: str = Field("feedback.deadletter", description="malformed events out")
    schema_registry_url: SecretStr | None = Field(
        None,
        description="a Schema Registry (secret: it may hold credentials). Values framed in the Confluent wire "
        "format are accepted either way; with a registry, a schema id it does not know is dead-lettered as "
        "`unknown_schema` (answers cached; an unreachable registry refuses nothing)",
    )
    schema_registry_auth: SecretStr | None = Field(
        None,
        description="the Schema Registry's basic-auth credentials, `user:password` (secret; e.g. a mounted file, see "
        "`TRIAGE_SECRETS_DIR`); credentials in `TRIAGE_SCHEMA_REGISTRY_URL` work too. Sent in a header, never logged",
    )
    passthrough_headers: Annotated[tuple[str, ...], NoDecode] = Field(
        ("traceparent", "tracestate"),
        description="input headers (comma-separated, any case) copied onto the escalation and result messages "
        "of the event, so a trace or a correlation id follows it; values that are not UTF-8 are left out. Every "
        "output message also carries `triage.event_id`",
    )
    group_id: str = Field("feedback-triage", description="consumer group")
    kafka_client_id: str = Field("feedback-triage-worker", description="client id sent to the broker")
    kafka_auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new group starts: `earliest` or `latest`"
    )
    kafka_max_poll_interval_ms: int = Field(
        300_000, ge=1_000, description="max time between polls before the group evicts the worker"
    )
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1_000, description="group session timeout (heartbeats every third of it)"
    )
    kafka_group_instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="static group membership (KIP-345): a member id stable across restarts (a StatefulSet pod's "
        "name), so a restart within the session timeout keeps its partitions instead of rebalancing the group; "
        "with `--processes N` each process appends `-0` ... `-(N-1)`. A stopped member's partitions then wait "
        "the session timeout before they move",
    )
    kafka_max_message_bytes: int = Field(
        1_048_576,
        ge=1_024,
        description="the largest record the topics take (the brokers' `message.max.bytes`): a larger input value "
        "is dead-lettered as `value_too_large`, and every message the worker sends is made to fit (a dead letter "
        "drops its value, then the input's headers; an escalation or a result cuts its text, see "
        "[faults](faults.md#oversized-records)); what the broker still refuses for good is parked in the outbox",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret: never logged or printed)")
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for TLS")
    kafka_ssl_certfile: str | None = Field(None, description="client certificate for mutual TLS")
    kafka_ssl_keyfile: str | None = Field(None, description="client key for mutual TLS")
    kafka_ssl_password: SecretStr | None = Field(None, description="password of the client key (secret)")

    @field_validator("results_topic", mode="before")
    @classmethod
    def _optional_topic(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("input_topic", "escalation_topic", "dead_letter_topic", "results_topic")
    @classmethod
    def _kafka_topic_name(cls, value: str | None) -> str | None:
        """A name Kafka refuses would fail every send of that kind, round after round: refuse it here."""
        if value is not None and not TOPIC_NAME.fullmatch(value):
            raise ValueError("a Kafka topic name is 1 to 249 of ASCII letters, digits, '.', '_' and '-'")
        return value

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            split_credentials(value.get_secret_value())  # raises a ValueError that never quotes the URL
        return value

    @field_validator("passthrough_headers", mode="before")
    @classmethod
    def _header_names(cls, value: Any) -> Any:
        """A comma-separated list (`traceparent,tracestate,x-correlation-id`); empty: none."""
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

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
