from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ensemble_kit import LogitStore
from helpers import make_logits

N_TRAIN, N_TEST, N_CLASSES, N_FOLDS = 60, 12, 3, 3


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def store(tmp_path: Path) -> LogitStore:
    y = np.arange(N_TRAIN) % N_CLASSES
    return LogitStore.create(
        tmp_path / "store", train_ids=[f"s{i:03d}" for i in range(N_TRAIN)], y=y,
        classes=[0, 1, 2], n_folds=N_FOLDS, seed=0, test_ids=[f"t{i:03d}" for i in range(N_TEST)],
    )


@pytest.fixture
def logits_y():
    return make_logits()


@pytest.fixture(scope="session")
def postgres_server():
    """URL of a PostgreSQL server (see tests/postgres_server.py); skips, or fails in CI, without one."""
    import os

    import postgres_server as pg

    pg.driver()
    if os.environ.get(pg.ENV_URL):
        yield os.environ[pg.ENV_URL]
        return
    yield from pg.start_cluster()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the test server."""
    import postgres_server as pg

    return pg.fresh_database(postgres_server)
