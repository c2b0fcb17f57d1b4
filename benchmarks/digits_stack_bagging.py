"""The full recipe on a digits-shaped stack (the demo's: 1,437 rows, 3 models, 10 classes) with 1 vs 3 bags per GBM stage.

Three scikit-learn models' 5-fold OOF probabilities on scikit-learn's digits stand in for the
demo's backbones; the full recipe is fitted for macro F1 with 60 trials, as the demo does.

    python benchmarks/digits_stack_bagging.py --bags 1,3
"""
import argparse
import time

import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from ensemble_kit import Stacker
from ensemble_kit.ensemble import cross_fit
from ensemble_kit.store import make_folds

BASE_MODELS = {"lr": LogisticRegression(max_iter=2000), "knn": KNeighborsClassifier(5),
               "et": ExtraTreesClassifier(200, random_state=0)}


def _digits_stack() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """OOF log-probabilities of the base models on the demo's 1,437 training digits."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:1437], y[:1437]
    folds = make_folds(y, 5, seed=0)

    def oof(model):
        return cross_fit(folds, lambda fit, held, _k: clone(model).fit(X[fit], y[fit]).predict_proba(X[held]))

    return {name: np.log(np.clip(oof(model), 1e-4, 1)) for name, model in BASE_MODELS.items()}, y, folds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bags", default="1,3", help="bag counts to time, comma-separated")
    args = parser.parse_args()
    logits, y, folds = _digits_stack()
    for bags in (int(b) for b in args.bags.split(",")):
        stk = Stacker.from_recipe("full", metric="f1_macro", n_trials=60, seed=0)
        stk.set_params(catboost__n_bags=bags, lightgbm__n_bags=bags)
        start = time.perf_counter()
        stk.fit(logits, y, folds=folds)
        stages = {name: round(stage.fit_seconds_, 1) for name, stage in stk.ensemble_.stages_.items()}
        print(f"{bags} bag(s): {time.perf_counter() - start:.1f} s; stages {stages}", flush=True)


if __name__ == "__main__":
    main()
