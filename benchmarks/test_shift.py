"""The OOF -> test shift of a stack, and a label-free correction of fold-averaged test logits.

A stack is fitted on OOF logits: each row predicted by *one* fold model. It is applied to test
logits that are the *mean of the fold models' logits*: less noisy, so a linear stack fitted on
the noisier OOF rows is attenuated on them (errors in variables). Under a linear-Gaussian
model the optimal transfer is to rescale the test features by ``cov(single fold) @
inv(cov(fold mean))``; both covariances are read off the test logits of the fold models,
**without labels** (each fold model's own test logits are distributed like its OOF logits).

This script measures, per bundle, on the test split (labels used for scoring only):

- per base model: test log loss of the fold-averaged logits, of the corrected ones (scalar
  or full-matrix correction), each also under the model's temperature fitted on OOF (honest),
  and the test-optimal temperature (analysis only, uses test labels);
- for the default's logistic stage (``MetaLearner("logreg")``, fitted on OOF) and optionally
  the default ``Stacker``: the fold-averaged test logits, the corrected ones, and the stack
  applied per fold model (mean of its log-probabilities), the issue's "consistency" direction.

    python benchmarks/test_shift.py --store /tmp/cifar10-store
    python benchmarks/test_shift.py --suite /tmp/suite --bundles imbalanced4,balanced6,cnn_family --stacker
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from ensemble_kit import LogitStore, MetaLearner, Stacker
from ensemble_kit.metrics import log_softmax, scores


def _centred(z: np.ndarray) -> np.ndarray:
    """Logits with each row's mean removed (softmax does not see it)."""
    return z - z.mean(axis=-1, keepdims=True)


def _deviations(folds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-centred logits of ``(F, n, C)`` fold models: the fold mean's per-class mean, its
    deviations from it ``(n, C)``, and each fold model's deviations from its own ``(F, n, C)``."""
    single = _centred(folds.astype(np.float64))
    mean = single.mean(axis=0)
    mu = mean.mean(axis=0)
    return mu, mean - mu, single - single.mean(axis=1, keepdims=True)


def _ratio(d_mean: np.ndarray, d_single: np.ndarray) -> float:
    return float(np.mean(d_single ** 2) / np.mean(d_mean ** 2))


def variance_ratio(folds: np.ndarray) -> float:
    """``var(one fold model) / var(fold mean)`` of one model's test logits ``(F, n, C)``."""
    _, d_mean, d_single = _deviations(folds)
    return _ratio(d_mean, d_single)


def correct(folds: np.ndarray, *, matrix: bool) -> np.ndarray:
    """Fold-averaged logits ``(n, C)`` of one model, rescaled to the spread of a single fold model.

    ``folds``: ``(F, n, C)`` the fold models' test logits. Scalar: every direction by
    ``var(single) / var(mean)``; matrix: by ``pinv(cov(mean)) @ cov(single)`` in the row-centred
    space (rank C - 1).
    """
    mu, d_mean, d_single = _deviations(folds)
    if not matrix:
        return mu + d_mean * _ratio(d_mean, d_single)
    cov_mean = d_mean.T @ d_mean / len(d_mean)
    cov_single = np.mean([d.T @ d / len(d) for d in d_single], axis=0)
    return mu + d_mean @ (np.linalg.pinv(cov_mean, rcond=1e-8, hermitian=True) @ cov_single)


def _ll(y, logits) -> float:
    return scores(y, logits, kind="logits")["log_loss"]


def _temperature(y, logits) -> float:
    return minimize_scalar(lambda t: _ll(y, logits / t), bounds=(0.05, 20.0), method="bounded").x


def analyse(path: Path, *, stacker: bool, n_trials: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    store = LogitStore(path)
    y_test = np.load(path.parent / f"{path.name}-test-labels.npy")
    models = store.models()
    oof = store.oof(models)
    folds = store.test(models, reduce=None)  # (M, F, n_test, C)
    mean = folds.mean(axis=1)
    scalar = np.stack([correct(f, matrix=False) for f in folds]).astype(np.float32)
    full = np.stack([correct(f, matrix=True) for f in folds]).astype(np.float32)

    base = []
    for m, name in enumerate(models):
        t_oof = _temperature(store.y, oof[m])
        base.append({"model": name, "OOF LL": _ll(store.y, oof[m]), "test LL (fold mean)": _ll(y_test, mean[m]),
                     "scalar": _ll(y_test, scalar[m]), "matrix": _ll(y_test, full[m]),
                     "T on OOF": t_oof, "fold mean / T_oof": _ll(y_test, mean[m] / t_oof),
                     "scalar / T_oof": _ll(y_test, scalar[m] / t_oof), "matrix / T_oof": _ll(y_test, full[m] / t_oof),
                     "var ratio": variance_ratio(folds[m]), "test-optimal T (analysis)": _temperature(y_test, mean[m])})
    base = pd.DataFrame(base)

    rows = []

    def add(method, predict_log_proba, seconds):
        per_fold = np.mean([predict_log_proba(folds[:, k]) for k in range(folds.shape[1])], axis=0)
        rows.append({"method": method, "fit s": seconds,
                     "fold mean": _ll(y_test, predict_log_proba(mean)),
                     "scalar": _ll(y_test, predict_log_proba(scalar)),
                     "matrix": _ll(y_test, predict_log_proba(full)),
                     "per fold (mean log-prob)": _ll(y_test, log_softmax(per_fold))})
        print(f"  {path.name} {method}: {rows[-1]}", flush=True)

    if len(models) < 2:
        return base, pd.DataFrame(rows)
    start = time.perf_counter()
    stage = MetaLearner("logreg", layout="wide", seed=0).fit(store, models=models)
    named = lambda x: dict(zip(models, x))  # noqa: E731
    add("logistic stage", lambda x: stage.predict_log_proba(named(x)), time.perf_counter() - start)
    if stacker:
        with tempfile.TemporaryDirectory() as studies:
            start = time.perf_counter()
            stk = Stacker(n_trials=n_trials, seed=0, storage=f"sqlite:///{studies}/optuna.db").fit(store, models=models)
            seconds = time.perf_counter() - start
        add("default Stacker", lambda x: np.log(np.clip(stk.predict_proba(named(x)), 1e-300, 1.0)), seconds)
    return base, pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="one bundle (test labels at <store>-test-labels.npy)")
    parser.add_argument("--suite", type=Path, help="folder of build_suite_bundles.py's bundles")
    parser.add_argument("--bundles", default="imbalanced4,balanced6,cnn_family")
    parser.add_argument("--stacker", action="store_true", help="also fit the default Stacker (slow)")
    parser.add_argument("--n-trials", type=int, default=200)
    args = parser.parse_args()
    if (args.store is None) == (args.suite is None):
        parser.error("give exactly one of --store and --suite")
    paths = [args.store] if args.store else [args.suite / name for name in args.bundles.split(",")]
    for path in paths:
        base, stacks = analyse(path, stacker=args.stacker, n_trials=args.n_trials)
        fmt = lambda v: f"{v:.4f}"  # noqa: E731
        print(f"\n## {path.name}: base models (test log loss)")
        print(base.to_string(index=False, float_format=fmt))
        print(f"\n## {path.name}: stacks fitted on OOF, applied to test logits (test log loss)")
        print(stacks.to_string(index=False, float_format=fmt), flush=True)


if __name__ == "__main__":
    main()
