"""Stacking quality on real OOF bundles: honest OOF CV and held-out test metrics per method.

For every bundle: each base model, and the baselines the default recipe has to beat (the best
single model by OOF log loss, the mean of probabilities, greedy ensemble selection with
replacement from an empty ensemble for 25 iterations (AutoGluon's default), a plain
logistic-regression stack on log-probabilities (scikit-learn ``StackingClassifier`` style, no
scaling, its ``C`` chosen by an inner 5-fold CV as ``LogisticRegressionCV`` does), wide
LightGBM, wide CatBoost and the naive fixed 0.4 CatBoost + 0.3 LightGBM + 0.3 greedy blend);
then the default Stacker: its stages, its blend, and the final model (and, as an analysis row
that is no method, the same fitted Stacker on ``test_shift.py``'s rescaled fold-mean test
logits, where the store keeps per-fold test logits). The summary gives the ratio of the
default's test log loss to the best baseline's, and 95 % paired bootstrap intervals over the
test rows of that ratio and of the accuracy and macro F1 differences to the best baselines (how
much of a difference the test split can resolve). OOF columns are honest
(nested on the store's folds); test columns are the held-out test split, whose labels are
never used for fitting.

    python benchmarks/build_cifar10_bundle.py --out /tmp/cifar10-store   # bundle 1, once (~2 h)
    python benchmarks/build_suite_bundles.py --out /tmp/suite            # bundles 2-5, once
    python benchmarks/stacking_quality.py --suite /tmp/suite --cifar-store /tmp/cifar10-store
    python benchmarks/stacking_quality.py --store /tmp/suite/imbalanced4    # one bundle

At more than 20 classes (the 396-class bundle) the wide baselines (one multi-class model on
M*C features) are not run: on 2,772 features x 396 classes they take hours; there the LR stack
is the class-wise logistic meta-learner and the bar is time, memory and the best single model.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble_kit import HillClimbing, LogitStore, MetaLearner, Stacker
from ensemble_kit.ensemble import cross_fit
from ensemble_kit.ensemble.blending import mix
from ensemble_kit.metrics import log_softmax, safe_log, scores
from ensemble_kit.metrics._classification import f1_macro_of_labels

from test_shift import correct

LR_CS = np.logspace(-3, 1, 9)  # the inner-CV grid of the LR stack baseline
BUNDLES = ("cifar10", "imbalanced4", "balanced6", "cnn_family", "many_classes")
DEFAULT_ROW = "**default recipe (Stacker())**"  # the method row every summary reads


def _scores(y, probs):
    if probs is None:  # a method whose honest OOF was not computed (--lr-stack-final-only)
        return dict.fromkeys(scores(y, np.full((len(y), int(y.max()) + 1), 1.0 / (int(y.max()) + 1)), kind="probs"),
                             np.nan)
    return scores(y, probs, kind="probs")


def paired_intervals(y: np.ndarray, p_default: np.ndarray, p_log_loss: np.ndarray, p_accuracy: np.ndarray,
                     p_f1: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95 % paired bootstrap intervals over test rows: the default's test log loss / the best
    baseline's, and its accuracy and macro F1 minus the best baselines' (``p_*``: the test
    probabilities of the baseline best on that metric).

    Every method is scored on the same resampled rows: how far each comparison moves with which
    rows the test split happened to draw.
    """
    rows, n_classes = np.arange(len(y)), p_default.shape[1]
    draws = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))

    def row_loss(p: np.ndarray) -> np.ndarray:
        return -safe_log(p / p.sum(axis=1, keepdims=True))[rows, y]

    ratio = row_loss(p_default)[draws].mean(axis=1) / row_loss(p_log_loss)[draws].mean(axis=1)
    decided, by_accuracy, by_f1 = p_default.argmax(axis=1), p_accuracy.argmax(axis=1), p_f1.argmax(axis=1)
    accuracy = (decided == y)[draws].mean(axis=1) - (by_accuracy == y)[draws].mean(axis=1)
    f1 = np.array([f1_macro_of_labels(y[d], decided[d], n_classes) - f1_macro_of_labels(y[d], by_f1[d], n_classes)
                   for d in draws])
    return {name: tuple(float(v) for v in np.quantile(values, [0.025, 0.975]))
            for name, values in (("log loss ratio", ratio), ("accuracy", accuracy), ("f1_macro", f1))}


def _lr_stack_features(logits: np.ndarray) -> np.ndarray:
    """``StackingClassifier``-style features: every model's log-probabilities side by side."""
    log_p = log_softmax(logits)
    return log_p.transpose(1, 0, 2).reshape(log_p.shape[1], -1)


def lr_stack(oof: np.ndarray, test: np.ndarray, y: np.ndarray, folds: np.ndarray, *, inner_cv: bool = True,
             nested: bool = True):
    """The plain LR stack: honest OOF (nested over the folds; ``None`` unless ``nested``) and test
    probabilities, fit seconds, the final ``C``."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    def make():
        if inner_cv:
            return LogisticRegressionCV(Cs=LR_CS, cv=5, scoring="neg_log_loss", max_iter=1000)
        return LogisticRegression(C=1.0, max_iter=1000)

    start = time.perf_counter()
    x, x_test = _lr_stack_features(oof), _lr_stack_features(test)

    def fit_predict(fit, held, _k):
        model = make().fit(x[fit], y[fit])
        out = np.full((int(held.sum()), oof.shape[2]), 1e-15)
        out[:, model.classes_] = model.predict_proba(x[held])
        return out

    oof_p = cross_fit(folds, fit_predict) if nested else None
    final = make().fit(x, y)
    test_p = np.full((len(x_test), oof.shape[2]), 1e-15)
    test_p[:, final.classes_] = final.predict_proba(x_test)
    c = float(np.atleast_1d(final.C_)[0]) if inner_cv else 1.0
    return oof_p, test_p, time.perf_counter() - start, c


def evaluate(store: LogitStore, y_test: np.ndarray, models: list[str], *, n_trials: int, label: str,
             lr_stack_nested: bool = True) -> dict:
    """Every method on one bundle: the table rows and the summary line."""
    y, folds = store.y, store.folds
    oof, test = store.oof(models), store.test(models)
    wide = store.n_classes <= 20
    print(f"\n## {label}: {len(models)} models, {len(y):,} OOF rows, {len(y_test):,} held-out test rows, "
          f"{store.n_classes} classes, {store.n_folds} folds", flush=True)
    rows, probs = [], {}

    def add(method, oof_p, test_p, seconds, *, baseline=False):
        rows.append({"method": method, "baseline": baseline, **{f"oof_{k}": v for k, v in _scores(y, oof_p).items()},
                     **{f"test_{k}": v for k, v in _scores(y_test, test_p).items()}, "fit_s": seconds})
        probs[method] = (oof_p, test_p)
        print(f"  {method}: test log loss {rows[-1]['test_log_loss']:.4f} ({seconds:.1f}s)", flush=True)

    base = {name: (np.exp(log_softmax(o)), np.exp(log_softmax(t))) for name, o, t in zip(models, oof, test)}
    for name, (o, t) in base.items():
        add(f"base: {name}", o, t, np.nan)
    best = min(base, key=lambda name: _scores(y, base[name][0])["log_loss"])
    add(f"best single model by OOF ({best})", *base[best], 0.0, baseline=True)
    add("mean of probabilities", np.mean([o for o, _ in base.values()], 0), np.mean([t for _, t in base.values()], 0),
        0.0, baseline=True)

    def fit(method, estimator, *, baseline=False):
        start = time.perf_counter()
        estimator.fit(store, models=models)
        add(method, estimator.oof_proba_, estimator.predict_proba(store), time.perf_counter() - start, baseline=baseline)
        return estimator

    fit("greedy selection (25 iterations, from empty)", HillClimbing(n_iter=25, init="empty"), baseline=True)
    if wide:
        oof_p, test_p, seconds, c = lr_stack(oof, test, y, folds, nested=lr_stack_nested)
        final_only = "" if lr_stack_nested else "; final fit only, no OOF"
        add(f"LR stack on log-probs (inner-CV C, final C={c:.3g}{final_only})", oof_p, test_p, seconds, baseline=True)
        lr_seconds = seconds
        oof_p, test_p, seconds, _ = lr_stack(oof, test, y, folds, inner_cv=False, nested=lr_stack_nested)
        add(f"LR stack on log-probs (fixed C=1, reference{final_only})", oof_p, test_p, seconds)
        fit("wide LightGBM", MetaLearner("lightgbm", layout="wide"), baseline=True)
        fit("wide CatBoost", MetaLearner("catboost", layout="wide"), baseline=True)
        naive = {"wide CatBoost": 0.4, "wide LightGBM": 0.3, "greedy selection (25 iterations, from empty)": 0.3}
        add("naive 0.4 CatBoost + 0.3 LightGBM + 0.3 greedy",
            *(np.exp(mix({m: probs[m][i] for m in naive}, naive)) for i in (0, 1)), 0.0, baseline=True)
    else:
        lr = fit("LR stack (class-wise logistic meta-learner)", MetaLearner("logreg", layout="classwise"),
                 baseline=True)
        lr_seconds = lr.fit_seconds_

    # a fresh study database, as on a user's first fit: the store's own optuna.db would hand back
    # the studies of an earlier run of this script, and its time would be that of reading them
    with tempfile.TemporaryDirectory() as studies:
        start = time.perf_counter()
        stk = Stacker(n_trials=n_trials, seed=0, storage=f"sqlite:///{studies}/optuna.db").fit(store, models=models)
        seconds = time.perf_counter() - start
    ensemble = stk.ensemble_
    if hasattr(ensemble, "stages_"):
        stage_test = ensemble.stage_proba(store)
        for name, stage in ensemble.stages_.items():
            add(f"default stage: {name}", stage.oof_proba_, stage_test[name], stage.fit_seconds_)
        weights = ", ".join(f"{n} {w:.3f}" for n, w in ensemble.weights_.items())
        add(f"default blend ({weights})", ensemble.oof_proba_, np.exp(ensemble._predict_log_proba(test)),
            ensemble.fit_seconds_)
    add(DEFAULT_ROW, stk.oof_proba_, stk.predict_proba(store), seconds)
    folds_test = store.test(models, reduce=None)
    if folds_test.shape[1] > 1:  # a direction under measurement (test_shift.py), not the default
        rescaled = {name: correct(f, matrix=True) for name, f in zip(models, folds_test)}
        add("default recipe on rescaled fold-mean test logits (test_shift.py, matrix; analysis)", stk.oof_proba_,
            stk.predict_proba(rescaled), seconds)

    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 70):
        print(table.drop(columns="baseline").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    baselines = table[table["baseline"]]
    final = table[table["method"] == DEFAULT_ROW].iloc[0]
    best_row = baselines.loc[baselines["test_log_loss"].idxmin()]
    best_methods = (best_row["method"], *(baselines.loc[baselines[f"test_{m}"].idxmax(), "method"]
                                          for m in ("accuracy", "f1_macro")))
    intervals = paired_intervals(y_test, probs[DEFAULT_ROW][1], *(probs[m][1] for m in best_methods))
    summary = {
        "bundle": label, "rows": len(y), "models": len(models), "classes": store.n_classes,
        "default test log loss": final["test_log_loss"], "best baseline": best_row["method"],
        "best baseline test log loss": best_row["test_log_loss"],
        "ratio": final["test_log_loss"] / best_row["test_log_loss"],
        "ratio 95% CI": "{:.3f} to {:.3f}".format(*intervals["log loss ratio"]),
        "acc (default / best baseline)": f"{final['test_accuracy']:.4f} / {baselines['test_accuracy'].max():.4f}",
        "macro F1 (default / best baseline)": f"{final['test_f1_macro']:.4f} / {baselines['test_f1_macro'].max():.4f}",
        "acc difference 95% CI": "{:+.4f} to {:+.4f}".format(*intervals["accuracy"]),
        "macro F1 difference 95% CI": "{:+.4f} to {:+.4f}".format(*intervals["f1_macro"]),
        "default fit s": seconds, "LR stack fit s": lr_seconds, "time ratio": seconds / lr_seconds,
        "peak RSS GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    return {"table": table, "summary": summary}


def _bundle(path: Path, models: str | None):
    store = LogitStore(path)
    y_test = np.load(path.parent / f"{path.name}-test-labels.npy")
    return store, y_test, models.split(",") if models else store.models()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="one bundle (test labels at <store>-test-labels.npy)")
    parser.add_argument("--suite", type=Path, help="folder of build_suite_bundles.py's bundles")
    parser.add_argument("--cifar-store", type=Path, default=Path("/tmp/cifar10-store"), help="bundle 1 (--suite)")
    parser.add_argument("--bundles", default=",".join(BUNDLES), help="--suite: which bundles, in order")
    parser.add_argument("--models", default=None, help="--store: comma-separated entries (default: all complete)")
    parser.add_argument("--n-trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="write every table and the summary as CSV here")
    parser.add_argument("--lr-stack-final-only", action="store_true",
                        help="fit the inner-CV LR stack baseline (and the fixed-C=1 reference) once on all OOF "
                             "rows (its test score and time) without its nested OOF, which takes hours at 50,000 "
                             "rows; its time is then that one fit, so the time ratio errs against the default")
    args = parser.parse_args()
    if (args.store is None) == (args.suite is None):
        parser.error("give exactly one of --store and --suite")

    if args.store:
        targets = [(args.store.name, args.store, args.models)]
    else:
        targets = [(name, args.cifar_store if name == "cifar10" else args.suite / name, None)
                   for name in args.bundles.split(",")]
    results = []
    for label, path, models in targets:
        if not (path / "ensemble_kit_store.json").exists():
            print(f"\n## {label}: no bundle at {path}; skipped (build it first)")
            continue
        store, y_test, names = _bundle(path, models)
        result = evaluate(store, y_test, names, n_trials=args.n_trials, label=label,
                          lr_stack_nested=not args.lr_stack_final_only)
        results.append(result)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            result["table"].to_csv(args.out / f"{label}.csv", index=False)
    summary = pd.DataFrame([r["summary"] for r in results])
    print("\n## summary (ratio: default / best baseline test log loss; 95 % paired bootstrap intervals over test "
          "rows of that ratio and of the default's accuracy and macro F1 minus the best baselines'; time ratio: "
          "default / LR stack fit seconds)")
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        summary.to_csv(args.out / "summary.csv", index=False)


if __name__ == "__main__":
    main()
