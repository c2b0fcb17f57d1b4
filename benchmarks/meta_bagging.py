"""Bagging the default's GBM stages over seeds: nested OOF decides, test is shown.

Each of the default's CatBoost and LightGBM stages (wide layout) is fitted with seeds
``0 .. n-1``; a seed moves the row subsampling and which fitting rows are held out for early
stopping. For every seed, and for the mean of the probabilities of the first ``k`` seeds
(``k`` in ``--bags``), the script prints the nested OOF log loss (every seed's OOF is nested on
the store's folds, so their mean is too), the held-out test log loss, accuracy and macro F1, and
the seconds. Test labels are only scored.

    python benchmarks/meta_bagging.py --suite /tmp/suite --bundles imbalanced4,balanced6
"""
import argparse
import time
from pathlib import Path

import numpy as np

from ensemble_kit import LogitStore, MetaLearner
from ensemble_kit.metrics import scores


def _line(label: str, y, y_test, oof, test, seconds: float) -> str:
    so, st = scores(y, oof, kind="probs"), scores(y_test, test, kind="probs")
    return (f"  {label:28s} OOF {so['log_loss']:.4f}  test {st['log_loss']:.4f}  acc {st['accuracy']:.4f}  "
            f"f1 {st['f1_macro']:.4f}  {seconds:6.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, required=True, help="folder of build_suite_bundles.py's bundles")
    parser.add_argument("--bundles", default="imbalanced4,balanced6")
    parser.add_argument("--learners", default="catboost,lightgbm")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--bags", default="3,5", help="bag sizes to report (first k seeds)")
    args = parser.parse_args()
    for name in args.bundles.split(","):
        store = LogitStore(args.suite / name)
        y, y_test = store.y, np.load(args.suite / f"{name}-test-labels.npy")
        print(f"\n## {name}: {len(y):,} OOF rows, {len(y_test):,} test rows, {store.n_classes} classes", flush=True)
        for learner in args.learners.split(","):
            runs = []
            for seed in range(args.seeds):
                start = time.perf_counter()
                stage = MetaLearner(learner, layout="wide", seed=seed).fit(store)
                runs.append((stage.oof_proba_, stage.predict_proba(store), time.perf_counter() - start))
                print(_line(f"{learner} seed {seed}", y, y_test, *runs[-1]), flush=True)
            for k in (int(b) for b in args.bags.split(",")):
                bag = runs[:k]
                print(_line(f"{learner} bag of {k}", y, y_test, np.mean([r[0] for r in bag], 0),
                            np.mean([r[1] for r in bag], 0), sum(r[2] for r in bag)), flush=True)


if __name__ == "__main__":
    main()
