"""Fit time and peak memory of every stacking stage on synthetic logits.

Each (N, M, C, stage) runs in a fresh process, which builds its own synthetic OOF logits
(correlated models of different strength), so the peak RSS it reports is that fit's alone;
the RSS right after building the data is printed too. Stages: soft_vote (Optuna, per-model
temperature), hill_climbing, catboost / lightgbm / logreg (meta-learners, class-wise above
20 classes), yandex (the whole "yandex" Stacker: soft vote, CatBoost, LightGBM, fixed blend,
temperature) and full (the whole default Stacker: those stages plus logreg, Optuna blend,
temperature); honest K-fold nesting included.

    python benchmarks/stacking_speed.py                                  # full grid (long)
    python benchmarks/stacking_speed.py --n 33000 --m 7 --c 396 --stages yandex full   # the target
Target: N=33,000, M=7, C=396 under 10 minutes and 8 GB peak on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import resource
import time


def synthetic(n: int, m: int, c: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    shared = rng.normal(size=(n, c)).astype(np.float32)
    logits = np.empty((m, n, c), dtype=np.float32)
    for i in range(m):
        strength = 2.0 + 2.0 * i / max(1, m - 1)
        logits[i] = 0.6 * shared + rng.normal(size=(n, c)).astype(np.float32)
        logits[i, np.arange(n), y] += strength
        logits[i] *= 0.5 + i % 3 * 0.5  # different calibration per model
    return logits, y


def _run(args) -> tuple[float, float, float]:
    n, m, c, stage, n_trials = args
    from ensemble_kit import HillClimbing, MetaLearner, SoftVoting, Stacker

    logits, y = synthetic(n, m, c)
    data_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    estimator = {
        "soft_vote": lambda: SoftVoting(temperature=True, n_trials=n_trials),
        "hill_climbing": lambda: HillClimbing(),
        "catboost": lambda: MetaLearner("catboost"),
        "lightgbm": lambda: MetaLearner("lightgbm"),
        "logreg": lambda: MetaLearner("logreg"),
        "yandex": lambda: Stacker.from_recipe("yandex", n_trials=n_trials),
        "full": lambda: Stacker.from_recipe("full", n_trials=n_trials),
    }[stage]()
    start = time.perf_counter()
    estimator.fit(logits, y)
    seconds = time.perf_counter() - start
    return seconds, data_rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--m", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--c", type=int, nargs="+", default=[10, 100, 396])
    parser.add_argument("--stages", nargs="+", default=["soft_vote", "hill_climbing", "catboost", "lightgbm", "logreg", "yandex", "full"])
    parser.add_argument("--n-trials", type=int, default=200)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    print(f"{'N':>7} {'M':>3} {'C':>4} {'stage':<14}{'fit s':>9}{'data GB':>9}{'peak GB':>9}")
    for n, m, c, stage in itertools.product(args.n, args.m, args.c, args.stages):
        with ctx.Pool(1) as pool:
            seconds, data_gb, peak_gb = pool.apply(_run, ((n, m, c, stage, args.n_trials),))
        print(f"{n:>7} {m:>3} {c:>4} {stage:<14}{seconds:>9.1f}{data_gb:>9.2f}{peak_gb:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
