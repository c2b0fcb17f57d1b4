"""Scale-out on one machine: fold tasks on 1 vs 2 local workers, Optuna studies on 1 vs 2 processes.

1. A tiny project (embedded digits, 2 timm models x 3 folds) trained with ``--executor local:1``
   and ``local:2`` in the same run: wall times and their ratio. Each worker gets
   ``cpu_count // workers`` torch threads, so one worker uses every core too: the ratio is the
   gain over the best single process. (The tests show bit-identical logits with a fixed
   ``cpu_threads``; here the thread counts differ on purpose.)
2. One Stacker with many studies (an Optuna soft vote and an Optuna blend, each nested over 5
   folds) fitted by 1 process, then by 2 processes at once, on a fresh PostgreSQL database each
   (``--storage URL``, else a temporary cluster started from the system's binaries): wall times,
   their ratio, and whether the two-process stack equals the single-process one.

    python benchmarks/parallel_folds.py [--out /tmp/parallel-bench] [--storage postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from ensemble_kit import LogitStore
from ensemble_kit.project import ProjectConfig, train_project

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"model": "resnet10t", "img_size": 32, "epochs": 4, "batch_size": 32, "device": "cpu"}

STACK_JOB = textwrap.dedent("""
    import sys, time
    import numpy as np
    from ensemble_kit import Blender, HillClimbing, SoftVoting, Stacker

    storage, out = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 5000)
    logits = {f"m{i}": np.eye(10)[y] * (0.6 + 0.3 * i) + rng.normal(size=(5000, 10)) * 1.3 for i in range(5)}
    stages = [("vote", SoftVoting("optuna", temperature=True, n_trials=150)), ("hc", HillClimbing(n_iter=25))]
    start, cpu = time.perf_counter(), time.process_time()
    stk = Stacker(stages=stages, n_trials=150, seed=0, storage=storage).fit(logits, y, folds=np.arange(5000) % 5)
    np.savez(out, oof=stk.oof_proba_, seconds=time.perf_counter() - start, cpu=time.process_time() - cpu,
             studies=len(stk.study_names_))
""")


def _project(out: Path, name: str, workers: int, threads: int | None = None) -> tuple[float, LogitStore]:
    model = {**MODEL, "cpu_threads": threads}
    cfg = ProjectConfig.from_dict({"store": str(out / name), "data": {"format": "digits", "image_size": 32},
                                   "folds": {"n_folds": 3},
                                   "models": {"r10": model, "r10b": {**model, "seed": 1}}})
    start = time.perf_counter()
    train_project(cfg, executor=f"local:{workers}")
    return time.perf_counter() - start, LogitStore(cfg.store)


def _fold_seconds(store: LogitStore) -> float:
    """Seconds spent in the folds' training epochs (what parallel workers can overlap)."""
    return sum(float(meta["train_seconds"]) for name in store.models()
               for meta in store.entry(name).fold_meta.values())


def folds_benchmark(out: Path) -> None:
    threads = os.cpu_count() or 1
    one_thread, store_serial = _project(out, "one-worker-one-thread", 1, threads=1)
    one, store_one = _project(out, "one-worker", 1)
    two, store_two = _project(out, "two-workers", 2)
    print("\n| tiny project (2 models x 3 folds, digits 32 px, 4 epochs) | wall seconds |\n| --- | --- |")
    print(f"| local:1, 1 torch thread | {one_thread:.1f} |")
    print(f"| local:1, {threads} torch threads (the default for 1 worker) | {one:.1f} |")
    print(f"| local:2, {max(1, threads // 2)} torch thread(s) each | {two:.1f} |")
    alone, together = _fold_seconds(store_serial), _fold_seconds(store_two)
    print(f"epochs of the 6 folds, summed: {alone:.1f} s one at a time, {together:.1f} s two at a time (each fold "
          f"{together / alone:.2f}x slower while another trains beside it: the bound on the speed-up here)")
    print(f"speed-up local:2 vs local:1: {one_thread / two:.2f}x at 1 thread per worker, {one / two:.2f}x against "
          f"one worker using all {threads} cores; both stores complete: "
          f"{store_one.models() == store_two.models() == ['r10', 'r10b'] and not store_two.incomplete()}")


def _stack_run(out: Path, storage: str, processes: int, tag: str) -> tuple[float, list[dict]]:
    script = out / "stack_job.py"
    script.write_text(STACK_JOB)
    files = [out / f"{tag}{i}.npz" for i in range(processes)]
    start = time.perf_counter()
    runs = [subprocess.Popen([sys.executable, str(script), storage, str(f)]) for f in files]
    if any(run.wait() != 0 for run in runs):
        raise SystemExit("a stacking process failed")
    return time.perf_counter() - start, [dict(np.load(f)) for f in files]


def studies_benchmark(out: Path, storage: str | None) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import postgres_server

    cluster = None
    if storage is None:
        cluster = postgres_server.start_cluster()
        storage = next(cluster)
    try:
        alone, (single,) = _stack_run(out, postgres_server.fresh_database(storage), 1, "alone")
        shared, results = _stack_run(out, postgres_server.fresh_database(storage), 2, "shared")
    finally:
        if cluster is not None:
            cluster.close()
    same = all(np.array_equal(r["oof"], single["oof"]) for r in results)
    print(f"\n| one Stacker, {int(single['studies'])} studies x 150 trials, PostgreSQL | wall seconds |\n| --- | --- |")
    print(f"| 1 process | {alone:.1f} |\n| 2 processes at once | {shared:.1f} |")
    print(f"speed-up: {alone / shared:.2f}x; both processes' stacks equal the single-process one: {same}")
    pairs = ", ".join(f"{float(r['cpu']):.1f} / {float(r['seconds']):.1f}" for r in results)
    print(f"CPU seconds / fit seconds: lone process {float(single['cpu']):.1f} / {float(single['seconds']):.1f} "
          f"(the rest is waiting on the database); the two processes {pairs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/parallel-bench"))
    parser.add_argument("--storage", default=None, help="a PostgreSQL server URL (default: start a temporary one)")
    parser.add_argument("--skip-folds", action="store_true")
    parser.add_argument("--skip-studies", action="store_true")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    if not args.skip_folds:
        folds_benchmark(args.out)
    if not args.skip_studies:
        studies_benchmark(args.out, args.storage)


if __name__ == "__main__":
    main()
