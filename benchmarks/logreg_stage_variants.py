"""Variants of the default's logistic stage on the suite bundles: nested OOF decides, test is shown.

For each bundle: features (every model's log-probabilities; the default's wide features with
each model's entropy and top log-probability; those plus each model's margin, its top
log-probability minus its second, and ``+rank``, each class's rank within each model's row),
standardised or not, 3- or 5-fold inner CV for ``C`` over ``logspace(-3, 1, 9)``, ``C`` as the
grid's best point or as the vertex of a parabola through the best point and its neighbours (in
log C; ``--c-choice``), and the solver (``lbfgs``, ``newton-cholesky``). The OOF column is
nested over the store's folds (the inner CV sees only the fitting rows); test labels are only
scored.

    python benchmarks/logreg_stage_variants.py --suite /tmp/suite --bundles imbalanced4,balanced6
    python benchmarks/logreg_stage_variants.py --suite /tmp/suite --features wide,wide+margin,wide+margin+rank \
        --scales unscaled --inner 3 --solvers newton-cholesky --c-choice grid,vertex
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
from ensemble_kit.metrics import log_softmax, scores

from stacking_quality import LR_CS, _lr_stack_features


FEATURES = ("logprobs", "wide", "wide+margin", "wide+margin+rank")


def _features(logits: np.ndarray, kind: str) -> np.ndarray:
    if kind == "logprobs":
        return _lr_stack_features(logits)
    columns = [wide_features(logits, "logprobs").astype(np.float64)]
    log_p = log_softmax(logits)                                   # (M, n, C)
    n = log_p.shape[1]
    if "margin" in kind:
        top2 = -np.partition(-log_p, 1, axis=2)[:, :, :2]
        columns.append((top2[:, :, 0] - top2[:, :, 1]).T)          # (n, M)
    if "rank" in kind:
        rank = np.argsort(np.argsort(-log_p, axis=2), axis=2)     # 0 = the model's top class
        columns.append(rank.transpose(1, 0, 2).reshape(n, -1).astype(np.float64))
    return np.concatenate(columns, axis=1)


def _vertex_c(mean_scores: np.ndarray) -> float:
    """The C at the vertex of the parabola (in log C) through the best grid point and its neighbours."""
    log_cs = np.log10(LR_CS)
    best = int(np.argmax(mean_scores))
    if best in (0, len(LR_CS) - 1):
        return float(LR_CS[best])
    a, b, _ = np.polyfit(log_cs[best - 1:best + 2], mean_scores[best - 1:best + 2], 2)
    return float(10 ** np.clip(-b / (2 * a), log_cs[best - 1], log_cs[best + 1])) if a < 0 else float(LR_CS[best])


def _fit(x: np.ndarray, y: np.ndarray, *, scale: bool, inner: int, solver: str, c_choice: str, seed: int):
    """``C`` by inner CV on these rows, then the refit; returns (predict_proba, C)."""
    scaler = StandardScaler().fit(x) if scale else None
    xs = scaler.transform(x) if scaler else x
    max_iter = 1000 if solver == "lbfgs" else 100
    splits = list(StratifiedKFold(inner, shuffle=True, random_state=seed).split(xs, y))
    search = LogisticRegressionCV(Cs=LR_CS, cv=splits, scoring="neg_log_loss", max_iter=max_iter, solver=solver,
                                  refit=False, l1_ratios=(0.0,), use_legacy_attributes=False).fit(xs, y)
    if c_choice == "vertex":
        c = _vertex_c(np.asarray(search.scores_).reshape(inner, -1).mean(axis=0))
    else:
        c = float(np.atleast_1d(search.C_)[0])
    model = LogisticRegression(C=c, max_iter=max_iter, solver=solver).fit(xs, y)
    return (lambda z: model.predict_proba(scaler.transform(z) if scaler else z)), c


def variant(x, x_test, y, folds, *, scale: bool, inner: int, solver: str, c_choice: str = "grid", seed: int = 0):
    """Nested OOF and test probabilities of one variant, its final C and its seconds."""
    start = time.perf_counter()
    settings = dict(scale=scale, inner=inner, solver=solver, c_choice=c_choice, seed=seed)
    oof = cross_fit(folds, lambda fit, held, _k: _fit(x[fit], y[fit], **settings)[0](x[held]))
    predict, c = _fit(x, y, **settings)
    return oof, predict(x_test), c, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, required=True, help="folder of build_suite_bundles.py's bundles")
    parser.add_argument("--bundles", default="imbalanced4,balanced6")
    parser.add_argument("--solvers", default="newton-cholesky,lbfgs")
    parser.add_argument("--features", default="logprobs,wide", help=f"comma-separated, of {FEATURES}")
    parser.add_argument("--scales", default="unscaled,scaled")
    parser.add_argument("--inner", default="3,5", help="inner-CV fold counts")
    parser.add_argument("--c-choice", default="grid", help="grid (the best grid point) and/or vertex")
    args = parser.parse_args()
    suite, bundles, solvers = args.suite, args.bundles.split(","), args.solvers.split(",")
    kinds = args.features.split(",")
    if set(kinds) - set(FEATURES):
        parser.error(f"--features takes {FEATURES}; got {args.features!r}")
    for name in bundles:
        store = LogitStore(suite / name)
        y_test = np.load(suite / f"{name}-test-labels.npy")
        models = store.models()
        oof, test, y, folds = store.oof(models), store.test(models), store.y, store.folds
        for kind in kinds:
            x, x_test = _features(oof, kind), _features(test, kind)
            for scale in (s == "scaled" for s in args.scales.split(",")):
                for inner in (int(k) for k in args.inner.split(",")):
                    for solver in solvers:
                        for c_choice in args.c_choice.split(","):
                            o, t, c, s = variant(x, x_test, y, folds, scale=scale, inner=inner, solver=solver,
                                                 c_choice=c_choice)
                            so, st = scores(y, o, kind="probs"), scores(y_test, t, kind="probs")
                            print(f"{name:12s} {kind:16s} scale={scale!s:5s} inner={inner} {solver:15s} "
                                  f"{c_choice:6s} C={c:<7.3g} OOF {so['log_loss']:.4f} test {st['log_loss']:.4f} "
                                  f"acc {st['accuracy']:.4f} f1 {st['f1_macro']:.4f} {s:6.1f}s", flush=True)


if __name__ == "__main__":
    main()
