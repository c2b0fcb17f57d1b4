"""Fold familiarity: what nested OOF cannot see about a stack, and meta folds that cut across the base folds.

A stack's nested OOF scores the stage fitted on folds != k on the rows of base fold k, whose
logits come from fold model k: a set of fold models the stage has never seen. At deployment the
final stage is applied to (the mean of) fold models whose OOF logits it was fitted on. When the
fold models of a base model differ in ways a flexible stage learns (they are separate training
runs), nested OOF under-rates that stage against the deployed one, and the blend, tuned on
nested OOF, under-weights it. This script measures, per bundle (test labels only score):

1. **the familiarity gap** of a wide logistic stage (every model's log-probabilities, entropy
   and top log-probability, unscaled; fixed ``C``): stage ``s`` (fitted on the OOF rows of
   folds != s) applied to the test logits of fold model ``k``, paired by ``k``: never seen
   (``s = k``) against seen (``s != k``); with ``--centre`` also after removing every fold
   model's class bias;
2. **the default Stacker with two meta-fold schemes**: the base folds themselves (what the
   library does) and meta folds that cut across them (each holds a class-stratified fifth of
   every base fold, so every stage fit has seen every fold model; no row is ever scored by a
   stage fitted on it, and its logits still come from a fold model that never trained on it);
3. optionally (``--c-curve``) the wide logistic stage's test log loss over the ``C`` grid the
   library searches (analysis only: it reads test labels).

    python benchmarks/fold_familiarity.py --suite /tmp/suite --bundles imbalanced4,balanced6,cnn_family
    python benchmarks/fold_familiarity.py --store /tmp/cifar10-store
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from ensemble_kit import LogitStore, Stacker
from ensemble_kit.ensemble._features import wide_features
from ensemble_kit.ensemble._learners import LEARNERS, LOGREG_CS, FitRequest
from ensemble_kit.metrics import log_loss, log_softmax, scores


def cross_cutting_folds(base: np.ndarray, y: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Meta folds, as many as base folds, each holding a class-stratified share of every base fold."""
    rng = np.random.default_rng(seed)
    n_folds = int(base.max()) + 1
    out = np.empty_like(base)
    offset = 0
    for k in range(n_folds):
        for c in np.unique(y):
            rows = np.flatnonzero((base == k) & (y == c))
            rng.shuffle(rows)
            out[rows] = (np.arange(len(rows)) + offset) % n_folds
            offset += len(rows)  # the next group starts where this one stopped: fold sizes stay level
    return out


def _logistic_stage(C: float, X: np.ndarray, y: np.ndarray, n_classes: int):
    """The library's wide logistic backend fitted at a fixed C (scaled and solved as the stage is);
    returns a function of features -> probabilities."""
    backend = LEARNERS.get("logreg")
    rows = np.arange(len(y))
    model = backend.fit(FitRequest(X=X, y=y, binary=False, n_classes=n_classes, categorical=None, weight=None,
                                   fit_rows=rows, stop_rows=rows[:0], seed=0, threads=1, params={"C": C}))
    return lambda features: np.exp(backend.scores(model, features, binary=False, categorical=None))


def familiarity(store: LogitStore, y_test: np.ndarray, C: float, *, centre: bool = False) -> dict[str, float]:
    """Stage s on fold model k's test logits, paired by k: never seen (s = k) vs seen (s != k).

    ``centre``: first shift every fold model's log-probabilities by its own per-class mean over
    its OOF rows (relative to the mean over fold models; no labels), which removes a fold
    model's class bias.
    """
    models = store.models()
    y, folds = store.y, store.folds
    oof = log_softmax(store.oof(models).astype(np.float64))   # (M, n, C)
    fold_test = log_softmax(store.test(models, reduce=None).astype(np.float64))  # (M, F, n_test, C)
    n_folds = fold_test.shape[1]
    if centre:
        bias = np.stack([oof[:, folds == k].mean(axis=1) for k in range(n_folds)], axis=1)  # (M, F, C)
        bias -= bias.mean(axis=1, keepdims=True)
        for k in range(n_folds):
            oof[:, folds == k] -= bias[:, k, None, :]
            fold_test[:, k] -= bias[:, k, None, :]
    X = wide_features(oof, "logprobs")
    X_test = [wide_features(fold_test[:, k], "logprobs") for k in range(n_folds)]
    loss = np.empty((n_folds, n_folds))  # loss[s, k]: stage s on fold model k
    nested = np.empty((len(y), store.n_classes))
    for s in range(n_folds):
        held = folds == s
        predict = _logistic_stage(C, X[~held], y[~held], store.n_classes)
        nested[held] = predict(X[held])
        loss[s] = [log_loss(y_test, predict(x), kind="probs") for x in X_test]
    unseen = np.diag(loss)
    seen = (loss.sum(axis=0) - unseen) / (n_folds - 1)
    return {"C": C, "centred": centre, "nested OOF": log_loss(y, nested, kind="probs"),
            "test, unseen fold model": float(unseen.mean()),
            "test, seen fold models": float(seen.mean()), "gap": float((unseen - seen).mean()),
            "gap min": float((unseen - seen).min()), "gap max": float((unseen - seen).max())}


def stacker_runs(store: LogitStore, y_test: np.ndarray, n_trials: int) -> list[dict]:
    """The default Stacker with the base folds as meta folds, and with cross-cutting ones."""
    models = store.models()
    oof = dict(zip(models, store.oof(models)))
    test = dict(zip(models, store.test(models)))
    rows = []
    for scheme, folds in (("base folds (library)", store.folds),
                          ("cross-cutting meta folds", cross_cutting_folds(store.folds, store.y))):
        with tempfile.TemporaryDirectory() as studies:
            start = time.perf_counter()
            stk = Stacker(n_trials=n_trials, seed=0, storage=f"sqlite:///{studies}/optuna.db").fit(
                oof, store.y, folds=folds)
            seconds = time.perf_counter() - start
        proba = stk.predict_proba(test)
        report = stk.report_.set_index("step")
        stage_oof = {name: report.loc[name, "log_loss"] for name in stk.stage_names_}
        test_scores = scores(y_test, proba, kind="probs")
        rows.append({"meta folds": scheme, "nested OOF": log_loss(store.y, stk.oof_proba_, kind="probs"),
                     "test LL": test_scores["log_loss"], "test acc": test_scores["accuracy"],
                     "test macro F1": test_scores["f1_macro"], "fit s": seconds,
                     "weights": " ".join(f"{n} {w:.3f}" for n, w in stk.ensemble_.weights_.items()),
                     "stage nested OOF": " ".join(f"{n} {v:.4f}" for n, v in stage_oof.items())})
        print(f"    {scheme}: {rows[-1]}", flush=True)
    return rows


def c_curve(store: LogitStore, y_test: np.ndarray) -> pd.DataFrame:
    """Test log loss of the wide logistic stage fitted on all OOF rows, over the library's C grid."""
    models = store.models()
    X = wide_features(store.oof(models), "logprobs")
    X_test = wide_features(store.test(models), "logprobs")
    return pd.DataFrame([{"C": C, "test LL": log_loss(
        y_test, _logistic_stage(C, X, store.y, store.n_classes)(X_test), kind="probs")} for C in LOGREG_CS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="one bundle (test labels at <store>-test-labels.npy)")
    parser.add_argument("--suite", type=Path, help="folder of build_suite_bundles.py's bundles")
    parser.add_argument("--bundles", default="imbalanced4,balanced6,cnn_family")
    parser.add_argument("--C", type=float, default=0.0316, help="the logistic stage's C for the familiarity gap")
    parser.add_argument("--n-trials", type=int, default=200)
    parser.add_argument("--centre", action="store_true",
                        help="also the gap with every fold model's class bias removed (label-free)")
    parser.add_argument("--no-stacker", action="store_true", help="only the familiarity gap (fast)")
    parser.add_argument("--c-curve", action="store_true", help="also the test log loss over the C grid (analysis)")
    args = parser.parse_args()
    if (args.store is None) == (args.suite is None):
        parser.error("give exactly one of --store and --suite")
    paths = [args.store] if args.store else [args.suite / name for name in args.bundles.split(",")]
    fmt = lambda v: f"{v:.4f}"  # noqa: E731
    gaps, runs = [], []
    for path in paths:
        store = LogitStore(path)
        y_test = np.load(path.parent / f"{path.name}-test-labels.npy")
        print(f"## {path.name}", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # lbfgs at the grid's weakest penalties
            for centre in (False, True) if args.centre else (False,):
                gaps.append({"bundle": path.name, **familiarity(store, y_test, args.C, centre=centre)})
                print(f"  familiarity: {gaps[-1]}", flush=True)
            if args.c_curve:
                print(c_curve(store, y_test).to_string(index=False, float_format=fmt), flush=True)
        if not args.no_stacker:
            runs += [{"bundle": path.name, **row} for row in stacker_runs(store, y_test, args.n_trials)]
    print("\n## familiarity gap of the wide logistic stage (test log loss, paired by input fold model)")
    print(pd.DataFrame(gaps).to_string(index=False, float_format=fmt))
    if runs:
        print("\n## default Stacker: base folds vs cross-cutting meta folds")
        print(pd.DataFrame(runs).to_string(index=False, float_format=fmt))


if __name__ == "__main__":
    main()
