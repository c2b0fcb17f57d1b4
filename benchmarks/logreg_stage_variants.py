"""Variants of the default's logistic stage on the suite bundles: nested OOF decides, test is shown.

For each bundle: features (every model's log-probabilities; the default's wide features with
each model's entropy and top log-probability; those plus each model's margin, its top
log-probability minus its second, and ``+rank``, each class's rank within each model's row),
standardised or not, 3- or 5-fold inner CV for ``C`` over ``logspace(-3, 1, 9)``, the rule that
turns the inner CV's scores into ``C`` (``--c-choice``), and the solver (``lbfgs``,
``newton-cholesky``). The rules: ``fold-mean``, the mean of each inner fold's best ``C`` (the
library's); ``best-mean``, the grid point with the best mean score; ``vertex``, the vertex of
the parabola (in log C) through that point and its two neighbours. The OOF column is nested
over the store's folds (the inner CV sees only the fitting rows); test labels are only scored.
``--stacker`` fits the whole default Stacker once per rule instead, its logistic stage choosing
``C`` by that rule.

    python benchmarks/logreg_stage_variants.py --suite /tmp/suite --bundles imbalanced4,balanced6
    python benchmarks/logreg_stage_variants.py --suite /tmp/suite --features wide,wide+margin,wide+margin+rank \\
        --scales unscaled --inner 3 --solvers newton-cholesky --c-choice fold-mean,vertex
    python benchmarks/logreg_stage_variants.py --suite /tmp/suite --stacker --c-choice fold-mean,vertex
"""
import argparse
import itertools
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from ensemble_kit import LogitStore, Stacker
from ensemble_kit.ensemble import cross_fit
from ensemble_kit.ensemble._learners import LOGREG_CS, _LogReg
from ensemble_kit.ensemble._features import wide_features
from ensemble_kit.metrics import log_softmax, scores

from stacking_quality import _lr_stack_features


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


def _best_mean_index(fold_scores: np.ndarray) -> int:
    return int(np.argmax(fold_scores.mean(axis=0)))


def _best_mean_c(fold_scores: np.ndarray) -> float:
    """The grid point with the best mean score over the inner folds (``LogisticRegressionCV(refit=True)``)."""
    return float(LOGREG_CS[_best_mean_index(fold_scores)])


def _vertex_c(fold_scores: np.ndarray) -> float:
    """The C at the vertex of the parabola (in log C) through the best mean score's grid point and its neighbours."""
    best = _best_mean_index(fold_scores)
    if best in (0, len(LOGREG_CS) - 1):
        return float(LOGREG_CS[best])
    log_cs, around = np.log10(LOGREG_CS)[best - 1:best + 2], fold_scores.mean(axis=0)[best - 1:best + 2]
    a, b, _ = np.polyfit(log_cs, around, 2)
    return float(10 ** np.clip(-b / (2 * a), log_cs[0], log_cs[2])) if a < 0 else float(LOGREG_CS[best])


#: How the inner CV's scores (folds x ``LOGREG_CS``) become one C; ``fold-mean`` is the library's rule.
C_RULES = {"fold-mean": _LogReg._choose_C, "best-mean": _best_mean_c, "vertex": _vertex_c}


def _fit(x: np.ndarray, y: np.ndarray, *, scale: bool, inner: int, solver: str, c_choice: str, seed: int):
    """``C`` by inner CV on these rows, then the refit; returns (predict_proba, C)."""
    scaler = StandardScaler().fit(x) if scale else None
    xs = scaler.transform(x) if scaler else x
    max_iter = 1000 if solver == "lbfgs" else 100
    splits = list(StratifiedKFold(inner, shuffle=True, random_state=seed).split(xs, y))
    search = LogisticRegressionCV(Cs=list(LOGREG_CS), cv=splits, scoring="neg_log_loss", max_iter=max_iter, solver=solver,
                                  refit=False, l1_ratios=(0.0,), use_legacy_attributes=False).fit(xs, y)
    c = C_RULES[c_choice](np.asarray(search.scores_).reshape(inner, len(LOGREG_CS)))
    model = LogisticRegression(C=c, max_iter=max_iter, solver=solver).fit(xs, y)
    return (lambda z: model.predict_proba(scaler.transform(z) if scaler else z)), c


def variant(x, x_test, y, folds, *, scale: bool, inner: int, solver: str, c_choice: str = "fold-mean",
            seed: int = 0):
    """Nested OOF and test probabilities of one variant, its final C and its seconds."""
    start = time.perf_counter()
    settings = dict(scale=scale, inner=inner, solver=solver, c_choice=c_choice, seed=seed)
    oof = cross_fit(folds, lambda fit, held, _k: _fit(x[fit], y[fit], **settings)[0](x[held]))
    predict, c = _fit(x, y, **settings)
    return oof, predict(x_test), c, time.perf_counter() - start


def stacker_with_c_rule(c_choice: str, seed: int = 0) -> Stacker:
    """The default Stacker whose logistic stage turns its inner CV's scores into C by ``C_RULES[c_choice]``."""
    backend = type(f"LogReg_{c_choice}", (_LogReg,), {"_choose_C": staticmethod(C_RULES[c_choice])})()
    return Stacker.from_recipe("full", seed=seed).set_params(logreg__learner=backend)


def _print_stackers(name: str, models, oof, test, y, folds, y_test, rules) -> None:
    for rule in rules:
        start = time.perf_counter()
        stack = stacker_with_c_rule(rule).fit(dict(zip(models, oof)), y, folds=folds)
        seconds = time.perf_counter() - start
        so = scores(y, stack.oof_proba_, kind="probs")
        st = scores(y_test, stack.predict_proba(dict(zip(models, test))), kind="probs")
        weights = " ".join(f"{k} {v:.3f}" for k, v in getattr(stack.ensemble_, "weights_", {}).items())
        print(f"{name:12s} Stacker {rule:9s} OOF {so['log_loss']:.4f} test {st['log_loss']:.4f} "
              f"acc {st['accuracy']:.4f} f1 {st['f1_macro']:.4f} {seconds:6.1f}s blend: {weights}", flush=True)


def _print_variants(name: str, oof, test, y, folds, y_test, kinds, scales, inners, solvers, rules) -> None:
    for kind in kinds:
        x, x_test = _features(oof, kind), _features(test, kind)
        for scale, inner, solver, c_choice in itertools.product(scales, inners, solvers, rules):
            o, t, c, s = variant(x, x_test, y, folds, scale=scale, inner=inner, solver=solver, c_choice=c_choice)
            so, st = scores(y, o, kind="probs"), scores(y_test, t, kind="probs")
            print(f"{name:12s} {kind:16s} scale={scale!s:5s} inner={inner} {solver:15s} "
                  f"{c_choice:9s} C={c:<7.3g} OOF {so['log_loss']:.4f} test {st['log_loss']:.4f} "
                  f"acc {st['accuracy']:.4f} f1 {st['f1_macro']:.4f} {s:6.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, required=True, help="folder of build_suite_bundles.py's bundles")
    parser.add_argument("--bundles", default="imbalanced4,balanced6")
    parser.add_argument("--solvers", default="newton-cholesky,lbfgs")
    parser.add_argument("--features", default="logprobs,wide", help=f"comma-separated, of {FEATURES}")
    parser.add_argument("--scales", default="unscaled,scaled")
    parser.add_argument("--inner", default="3,5", help="inner-CV fold counts")
    parser.add_argument("--c-choice", default="fold-mean", help=f"comma-separated, of {tuple(C_RULES)}")
    parser.add_argument("--stacker", action="store_true",
                        help="fit the whole default Stacker per --c-choice rule (the other variant flags are unused)")
    args = parser.parse_args()
    kinds, rules = args.features.split(","), args.c_choice.split(",")
    if set(kinds) - set(FEATURES):
        parser.error(f"--features takes {FEATURES}; got {args.features!r}")
    if set(rules) - set(C_RULES):
        parser.error(f"--c-choice takes {tuple(C_RULES)}; got {args.c_choice!r}")
    scales = [s == "scaled" for s in args.scales.split(",")]
    inners = [int(k) for k in args.inner.split(",")]
    for name in args.bundles.split(","):
        store = LogitStore(args.suite / name)
        y_test = np.load(args.suite / f"{name}-test-labels.npy")
        models = store.models()
        oof, test, y, folds = store.oof(models), store.test(models), store.y, store.folds
        if args.stacker:
            _print_stackers(name, models, oof, test, y, folds, y_test, rules)
        else:
            _print_variants(name, oof, test, y, folds, y_test, kinds, scales, inners, args.solvers.split(","), rules)


if __name__ == "__main__":
    main()
