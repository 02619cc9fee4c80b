"""Supervisor: `triage-worker run --processes N` runs N worker processes in one consumer group.

Several processes keep one GPU busy where one process's CPU path cannot (see worker/docs/performance.md).
The supervisor starts N children (`triage-worker run` with TRIAGE_PROCESSES=1), forwards SIGTERM
and SIGINT to them as SIGTERM, and waits. A child that exits while no stop was asked for is
unexpected: the supervisor stops the others (they drain and commit as usual) and exits with
ExitStatus.CHILD_DIED, so the process manager restarts the set. Nothing is lost either way: every child
commits only stored work. The children write their metrics to a shared folder (prometheus-client's
multiprocess mode) and open no port; the supervisor serves the sum on TRIAGE_METRICS_PORT, with
/healthz (503 when a child's loop has not polled for TRIAGE_HEALTH_STALL_S, as each child's last-poll
gauge says) and /readyz (database, schema, broker, every child running with its model loaded, and no
child's dead-letter guard tripped). Secrets are never copied into a child's environment.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess

from worker.contracts.errors import ExitStatus
from worker.logs import get_logger
from worker.runtime.service.health import CachedCheck, HealthServer
from worker.runtime.wiring import build_engine, dependency_checks
from worker.settings import Settings

log = get_logger("worker.supervisor")

POLL_S = 0.2
_PR_SET_PDEATHSIG = 1


def child_environment(settings: Settings, metrics_dir: str) -> dict[str, str]:
    """What a child runs with: the settings as TRIAGE_* variables, but no secret value. Secrets reach a
    child the way they reached the supervisor: its own environment's variables, or the files of
    TRIAGE_SECRETS_DIR (and `.env`), which the child reads itself; none is copied into its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")} | settings.as_env(secrets=False)
    env |= {k: v for k, v in os.environ.items() if k in settings.secret_variables() or k == "TRIAGE_SECRETS_DIR"}
    return env | {"TRIAGE_PROCESSES": "1", "TRIAGE_METRICS_PORT": "off", "PROMETHEUS_MULTIPROC_DIR": metrics_dir}


def supervise(settings: Settings) -> int:
    with tempfile.TemporaryDirectory(prefix="triage-metrics-") as metrics_dir:
        env = child_environment(settings, metrics_dir)
        children = [
            subprocess.Popen(
                [sys.executable, "-m", "worker", "run"],
                env=env | member_of(settings, index),
                start_new_session=True,  # a terminal's Ctrl-C reaches them once, forwarded, not twice
                preexec_fn=_die_with_parent,
            )
            for index in range(settings.processes)
        ]
        stopping = threading.Event()

        def forward(signum: int, frame: FrameType | None) -> None:
            log.info("shutdown_requested", signal=signal.Signals(signum).name, processes=len(children))
            stopping.set()
            _terminate(children)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        engine = build_engine(settings)
        server = _serve_metrics(settings, metrics_dir, dependency_checks(settings, engine), children)
        log.info("supervisor_started", processes=len(children), pids=[child.pid for child in children])
        try:
            return _wait(children, stopping, metrics_dir)
        finally:
            if server:
                server.stop()
            engine.dispose()


# A child's own verdict for the operator (change something; an unreadable batch, reset the offset) is
# passed through; any other unexpected death is CHILD_DIED.
OPERATOR_EXITS = (ExitStatus.OPERATOR, ExitStatus.UNREADABLE_BATCH)


def member_of(settings: Settings, index: int) -> dict[str, str]:
    """A child's own static group member id (TRIAGE_KAFKA_GROUP_INSTANCE_ID plus its index), if one is set:
    two members with one id would fence each other off."""
    if settings.kafka_group_instance_id is None:
        return {}
    return {"TRIAGE_KAFKA_GROUP_INSTANCE_ID": f"{settings.kafka_group_instance_id}-{index}"}


def _wait(children: list[subprocess.Popen[bytes]], stopping: threading.Event, metrics_dir: str) -> int:
    exit_code: int = ExitStatus.OK
    ended: set[int] = set()
    while len(ended) < len(children):
        for child in children:
            code = child.poll()
            if code is None or child.pid in ended:
                continue
            ended.add(child.pid)
            multiprocess.mark_process_dead(child.pid, metrics_dir)
            if not stopping.is_set():
                log.error("worker_process_died", pid=child.pid, exit_code=code)
                exit_code = code if code in OPERATOR_EXITS else ExitStatus.CHILD_DIED
                stopping.set()
                _terminate(children)
            elif code != 0 and exit_code == ExitStatus.OK:
                exit_code = ExitStatus.FAILED  # a child abandoned its work in hand
        time.sleep(POLL_S)
    log.info("supervisor_stopped", exit_code=exit_code)
    return exit_code


def _terminate(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)


def _serve_metrics(
    settings: Settings,
    metrics_dir: str,
    dependencies: dict[str, Callable[[], bool]],
    children: list[subprocess.Popen[bytes]],
) -> HealthServer | None:
    if settings.metrics_port is None:
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=metrics_dir)
    running = lambda: {child.pid for child in children if child.poll() is None}  # noqa: E731
    checks = {
        **dependencies,
        "workers": lambda: len(running()) == len(children),
        "model": lambda: all(seen(registry).get(pid, {}).get(MODEL) == 1 for pid in running()),
        "dead_letter_guard": lambda: not guard_tripped(registry),
    }
    ready = CachedCheck(lambda: {name: check() for name, check in checks.items()})
    server = HealthServer(
        settings.metrics_port,
        registry,
        ready,
        host=settings.metrics_host,
        liveness=lambda: stalled(seen(registry), running(), time.time(), settings.health_stall_s),
    ).start()
    log.info("metrics_listening", port=server.port, paths=["/metrics", "/healthz", "/readyz"])
    return server


LAST_POLL = "triage_main_loop_last_poll_timestamp_seconds"
MODEL = "triage_model_loaded"
GUARD = "triage_dead_letter_guard_tripped"


def seen(registry: CollectorRegistry) -> dict[int, dict[str, float]]:
    """What each child's metrics files say of it, by pid: its loop's last poll, whether its model is loaded."""
    found: dict[int, dict[str, float]] = {}
    for family in registry.collect():
        if family.name in (LAST_POLL, MODEL):
            for sample in family.samples:
                if "pid" in sample.labels:
                    found.setdefault(int(sample.labels["pid"]), {})[family.name] = sample.value
    return found


def guard_tripped(registry: CollectorRegistry) -> bool:
    return any(s.value for f in registry.collect() if f.name == GUARD for s in f.samples)


def stalled(
    children: dict[int, dict[str, float]], running: set[int], now: float, after_s: float
) -> dict[str, Any] | None:
    """/healthz: None while every running child's loop turns (or has not started); else which have not
    polled for `after_s`, so the liveness probe restarts the set."""
    idle = {
        str(pid): round(now - last, 1)
        for pid in running
        if (last := children.get(pid, {}).get(LAST_POLL, 0.0)) > 0 and now - last > after_s
    }
    return {"status": "stalled", "main_loop_idle_s": idle} if idle else None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies (Linux), not run on orphaned."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
