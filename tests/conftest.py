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
