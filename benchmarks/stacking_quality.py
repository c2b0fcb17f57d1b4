"""Stacking quality on a real OOF bundle: honest OOF CV and held-out test metrics per method.

For every base model, the plain mean of probabilities, hill climbing, the Optuna soft vote,
each meta-learner, a plain logistic-regression stack on log-probabilities (scikit-learn
StackingClassifier style), and the default "yandex" recipe (blend, + temperature,
+ thresholds): OOF log loss / accuracy / macro F1 (honest: nested on the store's folds), the
same metrics on the held-out test labels (never used for fitting), and fit time.

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
from ensemble_kit.metrics import f1_macro, log_loss, log_softmax


def _scores(y, probs, labels=None):
    out = {"log_loss": log_loss(y, probs, kind="probs")}
    labels = probs.argmax(1) if labels is None else labels
    out["accuracy"] = float(np.mean(labels == y))
    onehot = np.eye(probs.shape[1])[labels]
    out["f1_macro"] = f1_macro(y, onehot, kind="probs")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=Path("/tmp/cifar10-store"))
    parser.add_argument("--test-labels", type=Path, default=None,
                        help="held-out test labels .npy (default: <store>-test-labels.npy)")
    parser.add_argument("--models", default=None, help="comma-separated entries (default: all complete)")
    parser.add_argument("--n-trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="also write the table as CSV here")
    args = parser.parse_args()

    store = LogitStore.open(args.store)
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

    start = time.perf_counter()
    stk = Stacker(recipe="yandex", n_trials=args.n_trials, seed=0, storage=None).fit(store, models=models)
    stack_seconds = time.perf_counter() - start
    print(f"  yandex stacker: {stack_seconds:.1f}s", flush=True)
    stage_test = stk.blender_.stage_proba(store)
    for name, stage in stk.blender_.stages_.items():
        layout = getattr(stage, "layout_", None)
        label = {"soft_vote": "soft vote (Optuna, per-model T)", "catboost": f"CatBoost meta ({layout})",
                 "lightgbm": f"LightGBM meta ({layout})"}.get(name, name)
        rows.append((label, _scores(y, stage.oof_proba_), _scores(y_test, stage_test[name]), stage.fit_seconds_))
    blend_test = np.exp(stk.blender_._predict_log_proba(test))
    rows.append(("yandex blend 0.4/0.3/0.3", _scores(y, stk.blender_.oof_proba_), _scores(y_test, blend_test), stk.blender_.fit_seconds_))
    final_test = stk.predict_proba(store)
    report = stk.report_.set_index("step")
    if "+temperature" in report.index:
        rows.append(("yandex blend + temperature (default recipe)", report.loc["+temperature", ["log_loss", "accuracy", "f1_macro"]].to_dict(),
                     _scores(y_test, final_test), stack_seconds))
    if stk.thresholds_ is not None:
        rows.append(("yandex + class thresholds (labels)", report.loc["+thresholds", ["log_loss", "accuracy", "f1_macro"]].to_dict(),
                     _scores(y_test, final_test, stk.predict(store)), stack_seconds))

    start = time.perf_counter()
    logloss = Stacker(recipe="logloss", n_trials=args.n_trials, seed=0).fit(store, models=models)
    logloss_seconds = time.perf_counter() - start
    print(f"  logloss stacker: {logloss_seconds:.1f}s", flush=True)
    ll_report = logloss.report_.set_index("step")
    rows.append(("logloss recipe (+LR stage, Optuna blend, temperature)",
                 ll_report.loc["+temperature", ["log_loss", "accuracy", "f1_macro"]].to_dict(),
                 _scores(y_test, logloss.predict_proba(store)), logloss_seconds))

    table = pd.DataFrame([
        {"method": label, **{f"oof_{k}": v for k, v in o.items()}, **{f"test_{k}": v for k, v in t.items()}, "fit_s": s}
        for label, o, t, s in rows
    ])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    default = table[table["method"].str.contains("default recipe")]["test_log_loss"]
    if len(default):
        d = float(default.iloc[0])
        best_base = table[table["method"].str.startswith("base:")]["test_log_loss"].min()
        contenders = {"best single model": best_base,
                      "mean of probabilities": float(table.loc[table["method"] == "mean of probabilities", "test_log_loss"].iloc[0]),
                      "hill climbing": float(table.loc[table["method"] == "hill climbing", "test_log_loss"].iloc[0]),
                      "LR stack": float(table.loc[table["method"].str.startswith("LR stack"), "test_log_loss"].iloc[0])}
        for name, value in contenders.items():
            print(f"default recipe test log loss {d:.4f} vs {name} {value:.4f}: {'BEATS' if d < value else 'DOES NOT BEAT'}")
        ll = float(table.loc[table["method"].str.startswith("logloss recipe"), "test_log_loss"].iloc[0])
        for name, value in contenders.items():
            print(f"logloss recipe test log loss {ll:.4f} vs {name} {value:.4f}: {'BEATS' if ll < value else 'DOES NOT BEAT'}")
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
