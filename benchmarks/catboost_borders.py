"""How finely CatBoost quantises its features: the default stage's ``border_count``, measured.

The default's CatBoost stage (wide layout below 21 classes) spends most of the stack's fit time;
the number of borders per feature sets the cost of every split search. For each bundle, each
``border_count`` in ``--borders`` and each seed in ``0 .. --seeds - 1``, the script fits the stage
on the store's folds and prints its nested OOF log loss (this decides), the held-out test log
loss, accuracy and macro F1 (only scored), the boosting rounds kept by early stopping, and the
seconds. Test labels are never fitted.

    python benchmarks/catboost_borders.py --suite /tmp/suite --bundles imbalanced4,balanced6,cnn_family
"""
import argparse
import time
from pathlib import Path

import numpy as np

from ensemble_kit import LogitStore, MetaLearner
from ensemble_kit.metrics import scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, required=True, help="folder of build_suite_bundles.py's bundles")
    parser.add_argument("--bundles", default="imbalanced4,balanced6,cnn_family")
    parser.add_argument("--borders", default="128,64,32", help="border_count values, the first is the baseline")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    for name in args.bundles.split(","):
        store = LogitStore(args.suite / name)
        y, y_test = store.y, np.load(args.suite / f"{name}-test-labels.npy")
        print(f"\n## {name}: {len(y):,} OOF rows, {len(y_test):,} test rows, {store.n_classes} classes", flush=True)
        baseline_seconds = None
        for borders in (int(b) for b in args.borders.split(",")):
            oof_ll, test_ll, seconds, bag = [], [], 0.0, []
            for seed in range(args.seeds):
                start = time.perf_counter()
                stage = MetaLearner("catboost", params={"border_count": borders}, seed=seed).fit(store)
                test = stage.predict_proba(store)
                elapsed = time.perf_counter() - start
                seconds += elapsed
                bag.append((stage.oof_proba_, test))
                so, st = scores(y, stage.oof_proba_, kind="probs"), scores(y_test, test, kind="probs")
                oof_ll.append(so["log_loss"])
                test_ll.append(st["log_loss"])
                print(f"  borders {borders:3d} seed {seed}  OOF {so['log_loss']:.4f}  test {st['log_loss']:.4f}  "
                      f"acc {st['accuracy']:.4f}  f1 {st['f1_macro']:.4f}  rounds {stage.n_iterations_}  "
                      f"{elapsed:6.1f}s", flush=True)
            baseline_seconds = baseline_seconds or seconds
            print(f"  borders {borders:3d} mean     OOF {np.mean(oof_ll):.4f}  test {np.mean(test_ll):.4f}  "
                  f"{seconds / args.seeds:6.1f}s per fit ({seconds / baseline_seconds:.2f}x the first)", flush=True)
            if args.seeds > 1:  # the mean of every seed's probabilities: MetaLearner(n_bags=seeds)
                so = scores(y, np.mean([b[0] for b in bag], 0), kind="probs")
                st = scores(y_test, np.mean([b[1] for b in bag], 0), kind="probs")
                print(f"  borders {borders:3d} bag of {args.seeds} OOF {so['log_loss']:.4f}  test {st['log_loss']:.4f}  "
                      f"acc {st['accuracy']:.4f}  f1 {st['f1_macro']:.4f}  {seconds:6.1f}s in all", flush=True)


if __name__ == "__main__":
    main()
