"""Fixtures shared by every test: tiny checkpoints, ../shared resources, the service fixtures, --long."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.checkpoints import BERT_FINETUNED_IMDB, BERT_MLM_FT, build_checkpoint
from tests.services import broker, database_url, postgres_server_url, start_worker, worker_env  # noqa: F401

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_MODEL = SHARED / "models" / "minilm-imdb-sentiment"


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
