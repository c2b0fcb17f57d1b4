"""Variants of the default's logistic stage on the suite bundles: nested OOF decides, test is shown.

For each bundle: features (every model's log-probabilities, or the default's wide features with
each model's entropy and top log-probability), standardised or not, 3- or 5-fold inner CV for
``C`` over ``logspace(-3, 1, 9)``, and the solver (``lbfgs``, ``newton-cholesky``). The OOF
column is nested over the store's folds (the inner CV sees only the fitting rows); test labels
are only scored.

    python benchmarks/logreg_stage_variants.py --suite /tmp/suite --bundles imbalanced4,balanced6
"""
import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from ensemble_kit import LogitStore
from ensemble_kit.ensemble import cross_fit
from ensemble_kit.ensemble._features import wide_features
from ensemble_kit.metrics import scores

from stacking_quality import LR_CS, _lr_stack_features


def _features(logits: np.ndarray, kind: str) -> np.ndarray:
    if kind == "logprobs":
        return _lr_stack_features(logits)
    return wide_features(logits, "logprobs").astype(np.float64)


def _fit(x: np.ndarray, y: np.ndarray, *, scale: bool, inner: int, solver: str, seed: int):
    """``C`` by inner CV on these rows, then the refit; returns (predict_proba, C)."""
    scaler = StandardScaler().fit(x) if scale else None
    xs = scaler.transform(x) if scaler else x
    max_iter = 1000 if solver == "lbfgs" else 100
    splits = list(StratifiedKFold(inner, shuffle=True, random_state=seed).split(xs, y))
    search = LogisticRegressionCV(Cs=LR_CS, cv=splits, scoring="neg_log_loss", max_iter=max_iter, solver=solver,
                                  refit=False, l1_ratios=(0.0,), use_legacy_attributes=False).fit(xs, y)
    c = float(np.atleast_1d(search.C_)[0])
    model = LogisticRegression(C=c, max_iter=max_iter, solver=solver).fit(xs, y)
    return (lambda z: model.predict_proba(scaler.transform(z) if scaler else z)), c


def variant(x, x_test, y, folds, *, scale: bool, inner: int, solver: str, seed: int = 0):
    """Nested OOF and test probabilities of one variant, its final C and its seconds."""
    start = time.perf_counter()
    oof = cross_fit(folds, lambda fit, held, _k: _fit(x[fit], y[fit], scale=scale, inner=inner, solver=solver,
                                                       seed=seed)[0](x[held]))
    predict, c = _fit(x, y, scale=scale, inner=inner, solver=solver, seed=seed)
    return oof, predict(x_test), c, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, required=True, help="folder of build_suite_bundles.py's bundles")
    parser.add_argument("--bundles", default="imbalanced4,balanced6")
    parser.add_argument("--solvers", default="newton-cholesky,lbfgs")
    args = parser.parse_args()
    suite, bundles, solvers = args.suite, args.bundles.split(","), args.solvers.split(",")
    for name in bundles:
        store = LogitStore(suite / name)
        y_test = np.load(suite / f"{name}-test-labels.npy")
        models = store.models()
        oof, test, y, folds = store.oof(models), store.test(models), store.y, store.folds
        for kind in ("logprobs", "wide"):
            x, x_test = _features(oof, kind), _features(test, kind)
            for scale in (False, True):
                for inner in (3, 5):
                    for solver in solvers:
                        o, t, c, s = variant(x, x_test, y, folds, scale=scale, inner=inner, solver=solver)
                        so, st = scores(y, o, kind="probs"), scores(y_test, t, kind="probs")
                        print(f"{name:12s} {kind:8s} scale={scale!s:5s} inner={inner} {solver:15s} C={c:<7.3g} "
                              f"OOF {so['log_loss']:.4f} test {st['log_loss']:.4f} acc {st['accuracy']:.4f} "
                              f"f1 {st['f1_macro']:.4f} {s:6.1f}s", flush=True)


if __name__ == "__main__":
    main()
