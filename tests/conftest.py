"""Fixtures shared by every test: tiny checkpoints, ../shared resources, the service fixtures, --long."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.checkpoints import BERT_FINETUNED_IMDB, BERT_MLM_FT, build_checkpoint
from tests.faults.harness import TcpProxy
from tests.services import (  # noqa: F401
    DEAD_LETTERS,
    ESCALATIONS,
    INPUT,
    broker,
    database_url,
    postgres_server_url,
    start_worker,
    worker_env,
)
from worker.devtools.local_services import LocalBroker, free_port

# The suite runs tests in parallel (pytest-xdist), and many start worker processes: with torch's one
# thread per core in each, a 2-core machine spent ~15% of its CPU on threads waiting for each other.
# One thread per process, for the tests' own processes and the workers they start (they inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_MODEL = SHARED / "models" / "minilm-imdb-sentiment"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that load the real model are `model` tests, and every `model` test runs in one xdist
    group (one worker process), so two of them never share the CPU (see the README's test command)."""
    for item in items:
        if "real_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)
        if item.get_closest_marker("model"):
            item.add_marker(pytest.mark.xdist_group("model"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the fault suite at full size (20,000 events, 20 kills, 45 s outages, 10,000 hostile payloads)",
    )


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def checkpoint_pos_neg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with POSITIVE/NEGATIVE labels (like Anant1213/bert-finetuned-imdb)."""
    return build_checkpoint(tmp_path_factory.mktemp("ckpt-posneg"), BERT_FINETUNED_IMDB)


@pytest.fixture(scope="session")
def checkpoint_label_n(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with LABEL_0/LABEL_1 labels (like sm3455/bert-mlm-ft)."""
    return build_checkpoint(tmp_path_factory.mktemp("ckpt-labeln"), BERT_MLM_FT)


@pytest.fixture(scope="session")
def real_model() -> Path:
    if not (REAL_MODEL / "config.json").exists():
        pytest.skip("../shared/models/minilm-imdb-sentiment is not present")
    return REAL_MODEL


@pytest.fixture
def proxied_broker() -> Iterator[tuple[LocalBroker, TcpProxy]]:
    """A broker that advertises a proxy, so every client connection goes through it."""
    proxy_port = free_port()
    with LocalBroker(advertised_port=proxy_port) as local:
        proxy = TcpProxy(local.port, port=proxy_port)
        local.create_topics({INPUT: 3, ESCALATIONS: 1, DEAD_LETTERS: 1})
        yield local, proxy
        proxy.cut()
