"""CPU threads of a training process: torch's default against the chosen count (issue 41, part 4).

One training epoch of one fold (``train_cv``: resnet10t at 32 px, batch 64, synthetic 3-class
images, CPU) is timed in a fresh process per measurement, with the torch/BLAS threads set

- ``default``: what torch starts with by itself (``torch.get_num_threads()`` at import),
- ``chosen``:  ``cpu_threads: null``, ensemble_kit's rule (``ensemble_kit/train/_threads.py``),
- ``1``:       one thread,

in three situations:

- ``alone``: nothing else runs (beyond what the machine already does: the script prints the
  load average before each situation);
- ``beside 2 busy``: two other processes spin on the CPU (pure Python loops) all along;
- ``2 at once``: two training processes at the same time, as ``--executor local:2`` runs them
  (``chosen`` is then the local executor's share, ``max(1, cpus // 2)``).

The figure is the training throughput of the epoch (images per second, from ``history.csv``);
each cell is the median of ``--repeats`` runs (for ``2 at once``: of both processes' figures).

    python benchmarks/cpu_threads.py [--images 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EPOCH = textwrap.dedent("""
    import json, logging, sys
    import numpy as np
    import pandas as pd
    import torch
    default = torch.get_num_threads()
    from ensemble_kit import LogitStore
    from ensemble_kit.data import ArrayImageSource
    from ensemble_kit.train import TrainConfig, train_cv
    from ensemble_kit.train._threads import choose_threads, local_worker_threads, set_worker_threads

    mode, images, workers, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if workers > 1:  # what a local:N worker does at its start
        set_worker_threads(local_worker_threads(workers))
    threads = {"default": default, "chosen": None, "1": 1}[mode]
    rng = np.random.default_rng(0)
    y = np.arange(images) % 3
    x = np.clip(np.eye(3)[y][:, None, None, :] * 180 + rng.normal(60, 30, (images, 32, 32, 3)), 0, 255).astype(np.uint8)
    src = ArrayImageSource(x, y, ids=[f"i{i}" for i in range(images)], classes=[0, 1, 2])
    # 16 folds: fold 0's training rows are 15/16 of the images, its validation a small 1/16
    store = LogitStore.create(out + "/store", src.ids, src.labels, [0, 1, 2], n_folds=16, seed=0)
    cfg = TrainConfig.from_dict({"model": "resnet10t", "img_size": 32, "epochs": 1, "batch_size": 64,
                                 "device": "cpu", "cpu_threads": threads, "augment": {"random_resized_crop": False}})
    train_cv(cfg, store, src, name="m", folds=[0])
    history = pd.read_csv(out + "/store/runs/m/fold0/history.csv")
    used = threads if threads is not None else choose_threads(None).torch
    print(json.dumps({"images_per_second": float(history["train_images_per_second"].iloc[0]), "threads": used,
                      "default": default}))
""")

SPIN = "while True:\n    pass\n"


def _start_epoch(mode: str, images: int, workers: int, folder: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return subprocess.Popen([sys.executable, "-c", EPOCH, mode, str(images), str(workers), folder],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the timed epoch failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def measure(mode: str, situation: str, images: int) -> dict:
    """One measurement: the throughput (each process's, for '2 at once') and the threads used."""
    spinners = []
    try:
        if situation == "beside 2 busy":
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)]
            time.sleep(0.5)
        n = 2 if situation == "2 at once" else 1
        with tempfile.TemporaryDirectory() as tmp:
            procs = [_start_epoch(mode, images, n, f"{tmp}/{i}") for i in range(n)]
            results = [_result(p) for p in procs]
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return {"images_per_second": [r["images_per_second"] for r in results], "threads": results[0]["threads"],
            "default": results[0]["default"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024, help="images in the data set (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell, median (default: %(default)s)")
    args = parser.parse_args()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    print(f"{cpus} CPUs available (affinity), {os.cpu_count()} in the machine; one epoch of "
          f"{args.images * 15 // 16} training images, resnet10t at 32 px, batch 64, median of {args.repeats}\n")
    print("| situation | threads: default | img/s | threads: chosen | img/s | threads: 1 | img/s | chosen / default |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for situation in ("alone", "beside 2 busy", "2 at once"):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        cells = {}
        for mode in ("default", "chosen", "1"):
            runs = [measure(mode, situation, args.images) for _ in range(args.repeats)]
            speeds = [s for r in runs for s in r["images_per_second"]]
            cells[mode] = (runs[0]["threads"], statistics.median(speeds))
        ratio = cells["chosen"][1] / cells["default"][1]
        row = " | ".join(f"{cells[m][0]} | {cells[m][1]:.0f}" for m in ("default", "chosen", "1"))
        print(f"| {situation} (load before: {load:.1f}) | {row} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
