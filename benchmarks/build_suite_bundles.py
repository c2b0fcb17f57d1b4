"""Build the stacking-quality suite's bundles 2-5 into LogitStores (CPU, about 25 min on 2 cores).

Bundle 1 is the 9-model CIFAR-10 bundle of ``build_cifar10_bundle.py``. The others are made
here, each with 5 stratified folds over its training rows (honest OOF: every fold's model never
saw the rows it predicts) and a held-out test split whose labels are saved beside the store
(``<store>-test-labels.npy``) and never used for fitting:

- ``imbalanced4``: 4 CIFAR-10 classes (cat, dog, deer, horse) at 58 / 11 / 4 / 27 % of 2,500
  training rows (test: 1,000 rows, same shares); 6 models of different families (a small CNN,
  LightGBM on thumbnails, logistic regression on pixels, kNN on PCA, extra trees, logistic
  regression on gradient-orientation histograms).
- ``balanced6``: 6 classes x 300 = 1,800 training rows (test 3,000); one strong CNN, one weak
  CNN and four classic models, so some models are much stronger than others.
- ``cnn_family``: 10 classes x 500 = 5,000 training rows (test 5,000); four CNNs of one family
  (one width, four seeds): equally good, correlated models.
- ``many_classes``: synthetic logits, 396 classes, 7 models of different strength and
  calibration, 33,000 training rows and 5,000 test rows (as in ``stacking_speed.py``).

    python benchmarks/build_suite_bundles.py --out /tmp/suite
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ensemble_kit import LogitStore

from _cifar10 import load_cifar10
from build_cifar10_bundle import _features, _train_cnn

log = logging.getLogger("suite")

CIFAR_BUNDLES = {
    # name: (CIFAR class indices, training rows per class, test rows per class, models)
    "imbalanced4": ((3, 5, 4, 7), (1450, 275, 100, 675), (580, 110, 40, 270),
                    ("cnn", "lgbm_pixels", "logreg_pixels", "knn_pca", "extra_trees", "hog_logreg")),
    "balanced6": ((0, 1, 2, 6, 8, 9), (300,) * 6, (500,) * 6,
                  ("cnn_strong", "cnn_weak", "lgbm_pixels", "logreg_pixels", "knn_pca", "hog_logreg")),
    "cnn_family": (tuple(range(10)), (500,) * 10, (500,) * 10, ("cnn_s0", "cnn_s1", "cnn_s2", "cnn_s3")),
}
# CNN name -> (width, epochs, seed)
CNNS = {"cnn": (16, 15, 0), "cnn_strong": (24, 20, 0), "cnn_weak": (8, 4, 0),
        "cnn_s0": (20, 12, 0), "cnn_s1": (20, 12, 1), "cnn_s2": (20, 12, 2), "cnn_s3": (20, 12, 3)}


def _orientation_histograms(images: np.ndarray, cells: int = 4, bins: int = 9) -> np.ndarray:
    """HOG-like features: gradient-orientation histograms over a cells x cells grid, L2-normalised."""
    gray = images.astype(np.float32).mean(axis=3)
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, :, 1:-1] = gray[:, :, 2:] - gray[:, :, :-2]
    gy[:, 1:-1, :] = gray[:, 2:, :] - gray[:, :-2, :]
    magnitude = np.hypot(gx, gy)
    angle = (np.arctan2(gy, gx) % np.pi) / np.pi * bins
    index = np.minimum(angle.astype(np.int64), bins - 1)
    n, h, w = gray.shape
    cell = h // cells
    out = np.zeros((n, cells, cells, bins), dtype=np.float32)
    for i in range(cells):
        for j in range(cells):
            mag = magnitude[:, i * cell:(i + 1) * cell, j * cell:(j + 1) * cell].reshape(n, -1)
            idx = index[:, i * cell:(i + 1) * cell, j * cell:(j + 1) * cell].reshape(n, -1)
            for b in range(bins):
                out[:, i, j, b] = (mag * (idx == b)).sum(axis=1)
    out = out.reshape(n, -1)
    return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-6)


def _sklearn_models(seed: int) -> dict:
    import lightgbm as lgb
    from sklearn.decomposition import PCA
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logreg_pixels": ("x16", lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.005, max_iter=500))),
        "knn_pca": ("x16", lambda: make_pipeline(StandardScaler(), PCA(32, random_state=seed), KNeighborsClassifier(15))),
        "extra_trees": ("x8", lambda: ExtraTreesClassifier(300, min_samples_leaf=2, n_jobs=2, random_state=seed)),
        "lgbm_pixels": ("x8", lambda: lgb.LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15,
                                                         colsample_bytree=0.5, subsample=0.8, subsample_freq=1,
                                                         n_jobs=2, verbose=-1, random_state=seed)),
        "hog_logreg": ("hog", lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.02, max_iter=500))),
    }


def _pick(labels: np.ndarray, classes: tuple[int, ...], counts: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    rows = [rng.choice(np.flatnonzero(labels == c), size=n, replace=False) for c, n in zip(classes, counts)]
    return np.sort(np.concatenate(rows))


def build_cifar_bundle(name: str, data: dict, out: Path, seed: int = 0) -> None:
    classes, train_counts, test_counts, models = CIFAR_BUNDLES[name]
    rng = np.random.default_rng(seed)
    tr_rows = _pick(data["train_labels"], classes, train_counts, rng)
    te_rows = _pick(data["test_labels"], classes, test_counts, rng)
    remap = {c: i for i, c in enumerate(classes)}
    y_tr = np.array([remap[c] for c in data["train_labels"][tr_rows]])
    y_te = np.array([remap[c] for c in data["test_labels"][te_rows]])
    x_tr, x_te = data["train_images"][tr_rows], data["test_images"][te_rows]
    path = out / name
    if (path / "ensemble_kit_store.json").exists():
        store = LogitStore(path)
    else:
        names = [str(data["classes"][c]) for c in classes]
        store = LogitStore.create(path, data["train_ids"][tr_rows], [names[i] for i in y_tr], names,
                                  n_folds=5, seed=seed, test_ids=data["test_ids"][te_rows])
        np.save(out / f"{name}-test-labels.npy", y_te)
    feats_tr, feats_te = _features(x_tr), _features(x_te)
    feats_tr["hog"], feats_te["hog"] = _orientation_histograms(x_tr), _orientation_histograms(x_te)
    sklearn_models = _sklearn_models(seed)
    for model in models:
        if model in store.models():
            continue
        start = time.perf_counter()
        for k in range(store.n_folds):
            valid, fit = store.fold_indices(k), np.flatnonzero(store.folds != k)
            if model in sklearn_models:
                feat, factory = sklearn_models[model]
                fitted = factory().fit(feats_tr[feat][fit], store.y[fit])
                oof, test, kind = fitted.predict_proba(feats_tr[feat][valid]), fitted.predict_proba(feats_te[feat]), "probs"
            else:
                width, epochs, cnn_seed = CNNS[model]
                oof, test = _train_cnn(width, epochs, 1000 * cnn_seed + k, x_tr[fit], store.y[fit], [x_tr[valid], x_te],
                                       n_classes=len(classes))
                kind = "logits"
            store.put_fold(model, k, oof, test, kind=kind, meta={"family": model}, overwrite=True)
        log.info("%s/%s done in %.0fs", name, model, time.perf_counter() - start)
    log.info("%s:\n%s", name, store.leaderboard().to_string())


def synthetic_bundle(n: int, n_test: int, m: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(M, n + n_test, C)`` logits and labels of M correlated models of different strength and calibration."""
    rng = np.random.default_rng(seed)
    rows = n + n_test
    y = rng.integers(0, c, rows)
    shared = rng.normal(size=(rows, c)).astype(np.float32)
    logits = np.empty((m, rows, c), dtype=np.float32)
    for i in range(m):
        logits[i] = 0.6 * shared + rng.normal(size=(rows, c)).astype(np.float32)
        logits[i, np.arange(rows), y] += 2.0 + 2.0 * i / max(1, m - 1)
        logits[i] *= 0.5 + i % 3 * 0.5
    return logits, y


def build_many_classes(out: Path, n: int = 33_000, n_test: int = 5_000, m: int = 7, c: int = 396) -> None:
    path = out / "many_classes"
    if (path / "ensemble_kit_store.json").exists():
        return
    logits, y = synthetic_bundle(n, n_test, m, c)
    store = LogitStore.create(path, [f"r{i}" for i in range(n)], y[:n], list(range(c)), n_folds=5, seed=0,
                              test_ids=[f"t{i}" for i in range(n_test)])
    np.save(out / "many_classes-test-labels.npy", y[n:])
    for i in range(m):
        store.put(f"model{i}", logits[i, :n], logits[i, n:], kind="logits")
    log.info("many_classes:\n%s", store.leaderboard().to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/suite"))
    parser.add_argument("--bundles", default="many_classes,imbalanced4,balanced6,cnn_family")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    data = None
    for name in args.bundles.split(","):
        if name == "many_classes":
            build_many_classes(args.out)
            continue
        data = data if data is not None else load_cifar10()
        build_cifar_bundle(name, data, args.out)


if __name__ == "__main__":
    main()
