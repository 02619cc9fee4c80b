"""Wiring: the one place that builds the real parts from settings.

Every verb gets its classifier, database engine, Kafka producer and consumer, and the whole
worker, from here, so no copy of the options can drift. The model package (torch, transformers)
is imported only when a classifier is built, so verbs that need none start quickly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError

from worker.contracts import categories
from worker.contracts.categories import GENERAL, CategoryList
from worker.contracts.errors import OperatorError
from worker.logs import get_logger
from worker.model import calibration
from worker.runtime.batcher import MicroBatcher
from worker.runtime.decode import Decoder
from worker.runtime.guard import DeadLetterGuard
from worker.runtime.heartbeat import Heartbeat
from worker.runtime.kafka.consumer import KafkaSource
from worker.runtime.kafka.deadletter import DeadLetterSink
from worker.runtime.kafka.probe import broker_reachable
from worker.runtime.kafka.publisher import KafkaPublisher
from worker.runtime.kafka.registry import SchemaRegistry
from worker.runtime.pipeline import Chain
from worker.runtime.postgres.errors import DatabaseMisconfigured, Kind, classify
from worker.runtime.postgres.housekeeping import Housekeeping, housekeeping_loop
from worker.runtime.postgres.outbox import OutboxTable
from worker.runtime.postgres.partitions import ResultPartitions
from worker.runtime.postgres.schema import SchemaState, database_reachable, schema_at_head, schema_state
from worker.runtime.postgres.store import ResultStore
from worker.runtime.relay import OutboxRelay, relay_loop
from worker.runtime.retry import Backoff, Unavailable, retry
from worker.runtime.routing import Router
from worker.runtime.runner import Runner
from worker.runtime.service.health import CachedCheck, HealthServer
from worker.runtime.service.metrics import Metrics
from worker.runtime.shutdown import Shutdown
from worker.runtime.stages import DecodeStage, InferStage, Shadow, StoreStage, TokenizeStage
from worker.runtime.triage import TriagePolicy
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.model.answering import Classifier
    from worker.model.classifier import SentimentClassifier

log = get_logger("worker.wiring")

PRODUCER_BATCH_BYTES = 256 * 1024  # escalations carry the text (~1.3 kB): 16 kB batches meant a request per dozen
# Both clients contact a broker as they are built; an unreachable one is reported (and retried with
# backoff, see build_runner) after this long instead of kafka-python's 30 s.
BOOTSTRAP_TIMEOUT_MS = 5_000


def build_classifier(settings: Settings, *, calibrated: bool = True, shadow: bool = False) -> Classifier:
    """The served classifier (`calibrated=False`: without its calibration, which calibrate fits; `shadow`: the
    TRIAGE_SHADOW_MODEL candidate), from the ONNX cache without torch where it can be (model.onnx_serving)."""
    from worker.model.onnx_serving import open_cached

    model, options = _classifier_options(settings, calibrated, shadow)
    cached = open_cached(model, **options)
    if cached is not None:
        return cached
    from worker.model.classifier import SentimentClassifier

    return SentimentClassifier(model, compile_model=settings.torch_compile, **options)


def build_torch_classifier(settings: Settings, *, calibrated: bool = True, shadow: bool = False) -> SentimentClassifier:
    """Loaded through transformers whatever the engine (for embeddings, benchmarks); fills the ONNX cache."""
    from worker.model.classifier import SentimentClassifier

    model, options = _classifier_options(settings, calibrated, shadow)
    return SentimentClassifier(model, compile_model=settings.torch_compile, **options)


def _classifier_options(settings: Settings, calibrated: bool, shadow: bool) -> tuple[str, dict[str, Any]]:
    """The model, and the options every engine's classifier takes, from settings."""
    model = settings.shadow_model if shadow else settings.model
    assert model is not None
    setting = settings.shadow_calibration if shadow else settings.calibration
    return model, {
        "engine": settings.engine,
        "device": settings.device,
        "revision": settings.shadow_model_revision if shadow else settings.model_revision,
        "onnx_cache_dir": settings.onnx_cache_dir,
        "label_map": settings.label_map,
        "max_batch_size": settings.max_batch_size,
        "max_batch_tokens": settings.max_batch_tokens,
        "calibration": calibration.resolve(setting, model) if calibrated else None,
        "truncation": settings.truncation,
    }


def build_policy(settings: Settings, classifier: Classifier) -> TriagePolicy:
    """TRIAGE_LOW_CONFIDENCE_THRESHOLD when it is set; else the calibration's chosen threshold; else 0.60.
    With TRIAGE_CATEGORIES and a model with a category head, the policy routes too (see build_router)."""
    chosen = classifier.calibration.threshold if classifier.calibration else None
    threshold = settings.low_confidence_threshold if settings.threshold_is_explicit() or chosen is None else chosen
    router = build_router(settings, classifier)
    return TriagePolicy(threshold, settings.audit_sample_rate, settings.audit_scope, router)


def category_topics(settings: Settings) -> list[str]:
    """The category topics the relay publishes to (escalations and reviewers' reroutes), from the file: a
    served model without a head routes nothing, but a reviewer's tag still re-routes."""
    defined = build_categories(settings)
    return defined.topics() if defined else []


def build_categories(settings: Settings) -> CategoryList | None:
    """The TRIAGE_CATEGORIES file, read and checked; None when it is not set."""
    return categories.load(settings.categories) if settings.categories else None


def build_router(settings: Settings, classifier: Classifier) -> Router | None:
    """The router for the served model's category head, checked against the category file: a head that
    answers a category the file does not define is refused at start (its items could go nowhere), and a
    file without a model head routes nothing (said in the start-up line, not refused)."""
    defined = build_categories(settings)
    if defined is None or not classifier.categories:
        if defined is not None:
            log.warning("categories_not_routed", reason=f"{classifier.model_name} has no category head; train one")
        return None
    unknown = [name for name in classifier.categories if name != GENERAL and name not in defined.by_name]
    if unknown:
        raise categories.CategoryError(
            f"{classifier.model_name} answers categories that {defined.source} does not define: "
            f"{', '.join(unknown)}; add them to the file or train the model on its categories"
        )
    calibrated = classifier.calibration.category if classifier.calibration else None
    chosen = calibrated.threshold if calibrated else None
    explicit = settings.category_threshold_is_explicit() or chosen is None
    figures = dict(classifier.category_card.figures) if classifier.category_card else {}
    if calibrated and calibrated.figures:
        figures.update(calibrated.figures)  # calibrate's measurement is the newer one
    return Router(
        defined,
        threshold=settings.category_threshold if explicit else float(chosen),  # type: ignore[arg-type]
        f1_floor=settings.category_f1_floor,
        figures=figures,
    )


def build_schema_check(settings: Settings) -> Callable[[int], bool] | None:
    """With TRIAGE_SCHEMA_REGISTRY_URL: whether the registry knows a framed value's schema id (cached)."""
    if settings.schema_registry_url is None:
        return None
    auth = settings.schema_registry_auth.get_secret_value() if settings.schema_registry_auth else None
    return SchemaRegistry(settings.schema_registry_url.get_secret_value(), auth).knows


def build_shadow(settings: Settings, metrics: Metrics | None = None) -> tuple[Shadow | None, str | None]:
    """The TRIAGE_SHADOW_MODEL candidate with its own calibration and threshold (never an audit sample),
    and why it is off when it is set but cannot be loaded: a candidate never stops the served model."""
    if settings.shadow_model is None:
        return None, None
    try:
        candidate = build_classifier(settings, shadow=True)
        served = build_policy(settings, candidate)  # its threshold and its own category head's routing
    except Exception as exc:  # noqa: BLE001 - a missing path, a refused calibration, an export that fails
        reason = settings.redact(f"{type(exc).__name__}: {exc}")[:500]
        log.error("shadow_disabled", shadow_model=settings.shadow_model, reason=reason)
        if metrics:
            metrics.shadow_loaded.set(0)
        return None, reason
    log.info("shadow_model_loaded", **candidate.describe())
    on_failure = (lambda exc: metrics.shadow_failures.inc()) if metrics else (lambda exc: None)
    if metrics:
        metrics.shadow_loaded.set(1)
    return Shadow(candidate, TriagePolicy(served.threshold, router=served.router), on_failure), None


def build_engine(settings: Settings, *, pool_size: int = 2) -> Engine:
    """A connection pool that checks connections before use and gives up connecting after 5 s."""
    return create_engine(
        settings.sqlalchemy_url(), pool_pre_ping=True, pool_size=pool_size, connect_args={"connect_timeout": 5}
    )


def build_producer(settings: Settings, wait_ms: int = BOOTSTRAP_TIMEOUT_MS) -> KafkaProducer:
    """`wait_ms`: how long connecting, and a send waiting for a topic's metadata, may take."""
    return KafkaProducer(
        acks="all",
        linger_ms=5,
        batch_size=PRODUCER_BATCH_BYTES,
        max_block_ms=wait_ms,  # a send never stalls a stage for long while the broker is away
        max_request_size=settings.kafka_max_message_bytes,  # the topics' limit: what would not fit is refused here
        bootstrap_timeout_ms=wait_ms,
        allow_auto_create_topics=False,  # a missing topic is the deployment's to create, never a typo's
        **settings.kafka_common(),
    )


def build_reader(settings: Settings, wait_ms: int = BOOTSTRAP_TIMEOUT_MS) -> KafkaConsumer:
    """A consumer with no group, for reading a topic without committing (the operator tools)."""
    return KafkaConsumer(
        enable_auto_commit=False, bootstrap_timeout_ms=wait_ms, request_timeout_ms=max(wait_ms, 1_000) + 1_000,
        **settings.kafka_common(),
    )  # fmt: skip


def build_consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.kafka_auto_offset_reset,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(settings.kafka_session_timeout_ms // 3, 100),
        max_partition_fetch_bytes=max(settings.kafka_max_message_bytes, 1_048_576),
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        **({"group_instance_id": settings.kafka_group_instance_id} if settings.kafka_group_instance_id else {}),
        **settings.kafka_common(),
    )


def build_runner(settings: Settings, classifier: Classifier | None = None, shutdown: Shutdown | None = None) -> Runner:
    """The whole worker, started the way outages are handled at run time: while PostgreSQL or the
    broker cannot be reached it waits with backoff (one log line per try, `/readyz` says which),
    until they answer or a stop is requested (then `Abandoned`). A database whose schema is not at
    the migrations' head is no outage: that raises an OperatorError naming `triage-worker migrate`.

    The metrics port opens first, so `/healthz` answers, and `/readyz` says why it is not ready,
    during the waits and while a large model loads.
    """
    shutdown = shutdown or Shutdown(settings.shutdown_grace_s)
    backoff = Backoff(max_s=settings.retry_max_backoff_s)
    engine = build_engine(settings)
    metrics = Metrics()
    loaded = threading.Event()
    heartbeat = Heartbeat(on_beat=lambda: metrics.last_poll.set(time.time()))
    guard = DeadLetterGuard(settings.dead_letter_max_ratio, settings.dead_letter_max_consecutive)
    details: dict[str, str] = {}  # /readyz says these whether ready or not (a shadow that is off)
    server = _start_health_server(settings, engine, metrics, loaded, heartbeat, guard, details)
    try:
        schema = retry(
            lambda: _schema_of(engine, settings),
            backoff=backoff,
            abandon=shutdown.requested,
            event="waiting_for_database",
        )
        if not schema.at_head:
            raise OperatorError(schema.problem())
        classifier = classifier or build_classifier(settings)
        metrics.describe_model(classifier.describe())
        metrics.model_loaded.set(1)
        shadow, shadow_off = build_shadow(settings, metrics)
        if shadow_off:
            details["shadow"] = f"off: {shadow_off}"
        loaded.set()
        producer, consumer = retry(
            lambda: _connect_to_broker(settings),
            backoff=backoff,
            abandon=shutdown.requested,
            event="waiting_for_broker",
        )
    except BaseException:
        engine.dispose()
        if server:
            server.stop()
        raise

    def close() -> None:
        producer.close(timeout=10)
        engine.dispose()
        if server:
            server.stop()

    policy = build_policy(settings, classifier)
    dead_letters = DeadLetterSink(
        producer,
        settings.dead_letter_topic,
        max_message_bytes=settings.kafka_max_message_bytes,
        on_reduced=lambda form: metrics.dead_letters_reduced.labels(form).inc(),
    )
    stages = (
        Chain.of(
            DecodeStage(
                Decoder(
                    settings.max_text_chars,
                    settings.kafka_max_message_bytes,
                    settings.passthrough_headers,
                    build_schema_check(settings),
                )
            )
        )
        .then(TokenizeStage(classifier))
        .then(InferStage(classifier, policy, shadow))
        .then(
            StoreStage(
                ResultStore(
                    engine,
                    store_text=settings.store_text,
                    publish_results=settings.results_topic is not None,
                    topics=outbox_topics(settings),
                    max_message_bytes=settings.kafka_max_message_bytes,
                    route_by_topic=policy.router is not None and policy.router.categories.routing == "topic",
                ),
                dead_letters,
                backoff,
                shutdown.abandoned,
            )
        )
    )
    return Runner(
        KafkaSource(consumer, settings.input_topic, settings.kafka_auto_offset_reset),
        stages,
        MicroBatcher(classifier.max_batch_size, settings.max_wait_ms),  # the model's default is the device's
        depth=settings.pipeline_depth,
        shutdown=shutdown,
        revoke_drain_s=settings.revoke_drain_seconds(),
        metrics=metrics,
        background=[
            relay_loop(
                OutboxRelay(
                    OutboxTable(engine),
                    KafkaPublisher(producer),
                    outbox_topics(settings),
                    routes=category_topics(settings),
                    batch_size=settings.relay_batch_size,
                    on_delivered=metrics.observe_delivery,
                )
            ),
            housekeeping_loop(
                Housekeeping(engine, ResultPartitions(engine, settings.results_retention), settings.outbox_retention)
            ),
        ],
        on_close=close,
        guard=guard,
        heartbeat=heartbeat,
        started_fields={
            **classifier.describe(),
            "low_confidence_threshold": policy.threshold,
            "audit_sample_rate": policy.audit_sample_rate,
            **(policy.router.describe() if policy.router else {}),
            **({"shadow_model": shadow.model.model_name, "shadow_revision": shadow.model.revision} if shadow else {}),
            "topic": settings.input_topic,
            "group_id": settings.group_id,
        },
    )


def outbox_topics(settings: Settings) -> dict[str, str]:
    """Outbox kind -> the topic the relay publishes it to; results only when a results topic is set, and
    reroutes (`ack --category`) only with categories (each row names its category's topic, see relay)."""
    topics = {"escalation": settings.escalation_topic}
    if settings.results_topic:
        topics["result"] = settings.results_topic
    if settings.categories:
        topics["reroute"] = settings.escalation_topic
    return topics


def _schema_of(engine: Engine, settings: Settings) -> SchemaState:
    """The schema's state; an outage is waited out, a refusal (privileges, say) stops the worker."""
    try:
        return schema_state(engine)
    except DBAPIError as exc:
        error = classify(exc)
        if error.kind is Kind.OUTAGE:
            reason = settings.redact(str(exc.orig).strip()[:300])  # libpq's text may quote the host part of the URL
            raise Unavailable(f"database: {error.name}: {reason}") from None
        raise DatabaseMisconfigured(error) from None


def _connect_to_broker(settings: Settings) -> tuple[KafkaProducer, KafkaConsumer]:
    """Both clients bootstrap (ask a broker for its versions) as they are built."""
    servers = settings.kafka_bootstrap_servers
    try:
        producer = build_producer(settings)
    except KafkaError as exc:
        raise Unavailable(f"broker {servers}: {type(exc).__name__}: {exc}") from exc
    try:
        return producer, build_consumer(settings)
    except KafkaError as exc:
        producer.close(timeout=1)
        raise Unavailable(f"broker {servers}: {type(exc).__name__}: {exc}") from exc


def dependency_checks(settings: Settings, engine: Engine) -> dict[str, Callable[[], bool]]:
    """The readiness checks of what a worker needs: the database reachable and at the migrations'
    head, a broker reachable (for /readyz, the worker's and the supervisor's)."""
    servers = settings.kafka_common()["bootstrap_servers"]
    return {
        "database": lambda: database_reachable(engine),
        "schema": lambda: schema_at_head(engine),
        "broker": lambda: broker_reachable(servers),
    }


def _start_health_server(
    settings: Settings,
    engine: Engine,
    metrics: Metrics,
    loaded: threading.Event,
    heartbeat: Heartbeat,
    guard: DeadLetterGuard,
    details: dict[str, str],
) -> HealthServer | None:
    if settings.metrics_port is None:
        return None
    checks: dict[str, Callable[[], bool]] = {
        **dependency_checks(settings, engine),
        "model": loaded.is_set,
        "dead_letter_guard": lambda: guard.tripped is None,
    }
    ready = CachedCheck(lambda: {name: check() for name, check in checks.items()})
    server = HealthServer(
        settings.metrics_port,
        metrics.registry,
        ready,
        host=settings.metrics_host,
        liveness=lambda: heartbeat.stalled(settings.health_stall_s),
        reasons=lambda: {**details, **({"dead_letter_guard": guard.tripped.reason} if guard.tripped else {})},
    ).start()
    log.info("metrics_listening", port=server.port, paths=["/metrics", "/healthz", "/readyz"])
    return server
