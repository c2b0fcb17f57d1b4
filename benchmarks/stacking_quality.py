"""Stacking quality on a real OOF bundle: honest OOF CV and held-out test metrics per method.

For every base model, the plain mean of probabilities, hill climbing, the Optuna soft vote,
each meta-learner, a plain logistic-regression stack on log-probabilities (scikit-learn
StackingClassifier style), the default "full" recipe (its four stages, the tuned blend,
+ temperature) and the "yandex" recipe (fixed 0.4/0.3/0.3 blend, + temperature): OOF log
loss / accuracy / macro F1 (honest: nested on the store's folds), the same metrics on the
held-out test labels (never used for fitting), and fit time.

    python benchmarks/build_cifar10_bundle.py --out /tmp/cifar10-store      # once
    python benchmarks/stacking_quality.py --store /tmp/cifar10-store
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble_kit import HillClimbing, LogitStore, MetaLearner, Stacker
from ensemble_kit.metrics import log_softmax, scores


def _scores(y, probs, labels=None):
    return scores(y, probs, kind="probs", labels=labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=Path("/tmp/cifar10-store"))
    parser.add_argument("--test-labels", type=Path, default=None,
                        help="held-out test labels .npy (default: <store>-test-labels.npy)")
    parser.add_argument("--models", default=None, help="comma-separated entries (default: all complete)")
    parser.add_argument("--n-trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="also write the table as CSV here")
    args = parser.parse_args()

    store = LogitStore(args.store)
    models = args.models.split(",") if args.models else store.models()
    y_test = np.load(args.test_labels or args.store.parent / f"{args.store.name}-test-labels.npy")
    y = store.y
    oof = store.oof(models)
    test = store.test(models)
    print(f"store {store.path}: {len(models)} models, {len(y):,} OOF rows, {len(y_test):,} held-out test rows, "
          f"{store.n_classes} classes, {store.n_folds} folds")

    rows = []
    for name, o, t in zip(models, oof, test):
        rows.append(("base: " + name, _scores(y, np.exp(log_softmax(o))), _scores(y_test, np.exp(log_softmax(t))), np.nan))
    rows.append(("mean of probabilities", _scores(y, np.exp(log_softmax(oof)).mean(0)),
                 _scores(y_test, np.exp(log_softmax(test)).mean(0)), 0.0))

    def run(label, estimator):
        start = time.perf_counter()
        estimator.fit(store, models=models)
        seconds = time.perf_counter() - start
        rows.append((label, _scores(y, estimator.oof_proba_), _scores(y_test, estimator.predict_proba(store)), seconds))
        print(f"  {label}: {seconds:.1f}s", flush=True)
        return estimator

    run("hill climbing", HillClimbing(n_iter=100))
    run("LR stack on log-probs (wide)", MetaLearner("logreg", layout="wide"))

    stage_labels = {"logreg": "LR stage", "soft_vote": "soft vote (Optuna, per-model T)", "catboost": "CatBoost meta",
                    "lightgbm": "LightGBM meta"}

    def run_recipe(recipe: str, *, with_stages: bool) -> None:
        start = time.perf_counter()
        stk = Stacker.from_recipe(recipe, n_trials=args.n_trials, seed=0).fit(store, models=models)
        seconds = time.perf_counter() - start
        weights = ", ".join(f"{n} {w:.3f}" for n, w in stk.ensemble_.weights_.items())
        print(f"  {recipe} stacker: {seconds:.1f}s; blend weights: {weights}", flush=True)
        if with_stages:
            stage_test = stk.ensemble_.stage_proba(store)
            for name, stage in stk.ensemble_.stages_.items():
                layout = getattr(stage, "layout_", None)
                rows.append((f"{stage_labels.get(name, name)}{f' ({layout})' if layout else ''}",
                             _scores(y, stage.oof_proba_), _scores(y_test, stage_test[name]), stage.fit_seconds_))
        blend_test = np.exp(stk.ensemble_._predict_log_proba(test))
        rows.append((f"{recipe}: blend ({weights})", _scores(y, stk.ensemble_.oof_proba_), _scores(y_test, blend_test),
                     stk.ensemble_.fit_seconds_))
        report = stk.report_.set_index("step")
        rows.append((f"{recipe}: blend + temperature{' (default recipe)' if recipe == 'full' else ''}",
                     report.loc["+temperature", ["log_loss", "accuracy", "f1_macro"]].to_dict(),
                     _scores(y_test, stk.predict_proba(store)), seconds))

    run_recipe("full", with_stages=True)
    run_recipe("yandex", with_stages=False)

    table = pd.DataFrame([
        {"method": label, **{f"oof_{k}": v for k, v in o.items()}, **{f"test_{k}": v for k, v in t.items()}, "fit_s": s}
        for label, o, t, s in rows
    ])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    best_base = table[table["method"].str.startswith("base:")]["test_log_loss"].min()
    contenders = {"best single model": best_base,
                  "mean of probabilities": float(table.loc[table["method"] == "mean of probabilities", "test_log_loss"].iloc[0]),
                  "hill climbing": float(table.loc[table["method"] == "hill climbing", "test_log_loss"].iloc[0]),
                  "LR stack": float(table.loc[table["method"].str.startswith("LR stack"), "test_log_loss"].iloc[0])}
    for recipe in ("full", "yandex"):
        value = float(table.loc[table["method"].str.startswith(f"{recipe}: blend + temperature"), "test_log_loss"].iloc[0])
        for name, other in contenders.items():
            print(f"{recipe} recipe test log loss {value:.4f} vs {name} {other:.4f}: "
                  f"{'BEATS' if value < other else 'DOES NOT BEAT'}")
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
