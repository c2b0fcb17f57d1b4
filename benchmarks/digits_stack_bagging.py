"""The full recipe on a digits-shaped stack (the demo's: 1,437 rows, 3 models, 10 classes) with 1 vs 3 bags per GBM stage.

Three scikit-learn models' 5-fold OOF probabilities on scikit-learn's digits stand in for the
demo's backbones; the full recipe is fitted for macro F1 with 60 trials, as the demo does.

    python benchmarks/digits_stack_bagging.py --bags 1,3
"""
import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.ensemble import ExtraTreesClassifier
from ensemble_kit import Stacker
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--bags", default="1,3", help="bag counts to time, comma-separated")
args = parser.parse_args()
X, y = load_digits(return_X_y=True); X, y = X[:1437], y[:1437]
folds = np.zeros(len(y), int)
for k, (_, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y)): folds[te] = k
logits = {}
for name, m in [("lr", LogisticRegression(max_iter=2000)), ("knn", KNeighborsClassifier(5)), ("et", ExtraTreesClassifier(200, random_state=0))]:
    p = np.zeros((len(y), 10))
    for k in range(5):
        m.fit(X[folds != k], y[folds != k]); p[folds == k] = m.predict_proba(X[folds == k])
    logits[name] = np.log(np.clip(p, 1e-4, 1))
for bags in args.bags.split(","):
    stk = Stacker.from_recipe("full", metric="f1_macro", n_trials=60, seed=0)
    stk.set_params(catboost__n_bags=int(bags), lightgbm__n_bags=int(bags))
    t = time.perf_counter(); stk.fit(logits, y, folds=folds); s = time.perf_counter() - t
    st = {n: round(v.fit_seconds_, 1) for n, v in stk.ensemble_.stages_.items()}
    print(bags, f"{s:.1f}s", st, flush=True)
