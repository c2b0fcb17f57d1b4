"""How low can a stack's test log loss go on a bundle? An analysis that uses the test labels.

``stacking_quality.py`` asks the default recipe for at most 0.97 x the best baseline's held-out
test log loss. This script measures what limits that bar. It fits on the **test labels**, so
nothing here is a method, a score or a tuning signal: it is a ceiling, printed beside the
target.

- ``linear floor``: the multinomial logistic regression on the models' log-probabilities,
  fitted to all the test rows with almost no penalty (``C=1e4``) and scored on those same rows.
  It minimises the test log loss over all linear stacks on these features, so (up to that small
  penalty) no linear stack fitted anywhere else can score lower on the test rows.
- ``linear floor + calibration features``: the same with each model's entropy and top
  log-probability added (the default's wide features).
- ``test-fitted LR stack (5-fold over test)`` and ``test-fitted CatBoost (5-fold over test)``:
  the stacks cross-fitted on the test rows themselves, with the LR ``C`` chosen by inner CV.
  This is an honest held-out score for a stack whose training rows come from the test rows'
  own distribution: it removes the shift between OOF logits (one fold model) and test logits
  (the mean of the fold models), which no stack fitted on OOF rows can remove.
- ``OOF -> test shift``: the mean over base models of (OOF log loss - test log loss).

    python benchmarks/stacking_ceiling.py --suite /tmp/suite --quality /tmp/quality

``--quality``: the folder of CSVs ``stacking_quality.py --out`` wrote; the best baseline's and
the default's test log loss are read from there (without it only the ceilings are printed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble_kit import LogitStore
from ensemble_kit.ensemble._features import wide_features
from ensemble_kit.metrics import scores

from stacking_quality import DEFAULT_ROW, LR_CS, _lr_stack_features

TARGET = 0.97
BUNDLES = ("imbalanced4", "balanced6", "cnn_family")


def _in_sample(x: np.ndarray, y: np.ndarray) -> float:
    """Test log loss of the (almost) unpenalised multinomial LR fitted to those same test rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(x)  # at C=1e4 scaling barely moves the fit, and it helps the solver
    model = LogisticRegression(C=1e4, solver="newton-cholesky", max_iter=200).fit(x, y)
    return scores(y, model.predict_proba(x), kind="probs")["log_loss"]


def _cross_fit(x: np.ndarray, y: np.ndarray, make, seed: int = 0) -> float:
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(y), int(y.max()) + 1))
    for fit, held in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
        model = make().fit(x[fit], y[fit])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return scores(y, np.clip(probs, 1e-15, 1.0), kind="probs")["log_loss"]


def _lr_cv():
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=LR_CS, cv=5, scoring="neg_log_loss",
                                                                solver="newton-cholesky", max_iter=200))


def _catboost():
    from catboost import CatBoostClassifier

    return CatBoostClassifier(iterations=500, learning_rate=0.1, depth=4, random_seed=0, verbose=False,
                              allow_writing_files=False, thread_count=2)


def analyse(path: Path, quality: Path | None) -> dict:
    store = LogitStore(path)
    y_test = np.load(path.parent / f"{path.name}-test-labels.npy")
    models = store.models()
    oof, test = store.oof(models), store.test(models)
    start = time.perf_counter()
    shift = np.mean([scores(store.y, o, kind="logits")["log_loss"] - scores(y_test, t, kind="logits")["log_loss"]
                     for o, t in zip(oof, test)])
    x = _lr_stack_features(test)
    row = {"bundle": path.name, "OOF -> test shift": shift,
           "linear floor": _in_sample(x, y_test),
           "linear floor + calibration features": _in_sample(wide_features(test, "logprobs"), y_test),
           "test-fitted LR stack (5-fold over test)": _cross_fit(x, y_test, _lr_cv),
           "test-fitted CatBoost (5-fold over test)": _cross_fit(x, y_test, _catboost)}
    if quality is not None and (quality / f"{path.name}.csv").exists():
        table = pd.read_csv(quality / f"{path.name}.csv")
        best = table[table["baseline"]]["test_log_loss"].min()
        row = {**row, "best baseline": best, "target (0.97 x best)": TARGET * best,
               "default": table.loc[table["method"] == DEFAULT_ROW, "test_log_loss"].iloc[0]}
        for key in ("linear floor", "linear floor + calibration features", "test-fitted LR stack (5-fold over test)",
                    "test-fitted CatBoost (5-fold over test)", "default"):
            row[f"{key} / best"] = row[key] / best
    row["seconds"] = time.perf_counter() - start
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, required=True, help="folder of build_suite_bundles.py's bundles")
    parser.add_argument("--bundles", default=",".join(BUNDLES))
    parser.add_argument("--quality", type=Path, default=None, help="stacking_quality.py --out folder")
    args = parser.parse_args()
    rows = []
    for name in args.bundles.split(","):
        rows.append(analyse(args.suite / name, args.quality))
        print(pd.Series(rows[-1]).to_string(float_format=lambda v: f"{v:.4f}"), "\n", flush=True)
    table = pd.DataFrame(rows).set_index("bundle").T
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
