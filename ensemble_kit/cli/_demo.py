"""``ensemble-kit demo``: the store's path end to end on embedded digits (no network)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from ensemble_kit.data.embedded import load_digits_images
from ensemble_kit.store import LogitStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    store: LogitStore
    leaderboard: pd.DataFrame
    next_steps: list[str]


def _base_models(seed: int) -> dict[str, object]:
    return {
        "logreg_pixels": make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=500)),
        "knn_pixels": make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=7)),
        "extra_trees": ExtraTreesClassifier(n_estimators=200, random_state=seed, n_jobs=-1),
    }


def run_demo(out: Path, *, seed: int = 0, n_folds: int = 5) -> DemoResult:
    """Create a store from the embedded digits, write each model fold by fold, rank them."""
    train, test = load_digits_images(image_size=8, seed=seed)
    out = Path(out)
    store_path = out / "store"
    if store_path.exists():
        shutil.rmtree(store_path)
    store = LogitStore.create(store_path, train.ids, train.labels, classes=list(range(10)),
                              n_folds=n_folds, seed=seed, test_ids=test.ids)
    x_train = train.images[..., 0].reshape(len(train.ids), -1).astype(np.float32) / 255.0
    x_test = test.images[..., 0].reshape(len(test.ids), -1).astype(np.float32) / 255.0
    models = _base_models(seed)
    with tqdm(total=len(models) * n_folds, desc="demo: base models x folds") as bar:
        for name, model in models.items():
            for k in range(n_folds):
                valid = store.fold_indices(k)
                fit_rows = np.setdiff1d(np.arange(len(x_train)), valid)
                model.fit(x_train[fit_rows], store.y[fit_rows])
                store.put_fold(name, k, model.predict_proba(x_train[valid]), model.predict_proba(x_test),
                               kind="probs", meta={"estimator": type(model).__name__})
                bar.update()
    store.verify()
    board = store.leaderboard("log_loss")
    test_scores = []
    for name in board["model"]:
        logits = store.test(name)
        test_scores.append(float(np.mean(logits.argmax(1) == test.labels)))
    board.insert(4, "test_accuracy", test_scores)
    board = board[["model", "log_loss", "accuracy", "f1_macro", "test_accuracy"]]
    return DemoResult(store, board, [
        f"Inspect: ensemble-kit ls {store_path}",
        f"Verify:  ensemble-kit verify {store_path}",
    ])
