"""Logit store I/O against plain numpy, measured in one process.

Prints, for an N x C float32 entry (default 100,000 x 1,000, 400 MB): write time of
``LogitStore.put`` vs ``np.save`` and read time of ``LogitStore.oof`` vs ``np.load`` (medians of
``--repeats`` runs, interleaved so both see the same page-cache state), the time to open a store
holding ``--entries`` such entries and list/inspect them, and the peak Python-tracked memory of
reading one entry. Targets: write <= 1.5x np.save, read <= 1.2x np.load, open < 0.5 s.

``--import-rows`` (default 10k, 100k and 1M) times ``import_predictions`` of a CSV of string ids
(OOF + test rows, 10 class columns) against ``pandas.read_csv`` of the same file, measured in
the same run. Target: within 3x of ``read_csv`` at every size (it used to be quadratic).

    python benchmarks/store_io.py                 # full size (needs ~9 GB of free disk)
    python benchmarks/store_io.py --rows 20000 --entries 5 --import-rows 10000 100000   # quick
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from ensemble_kit import LogitStore


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--entries", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--import-rows", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="store_io_", dir=args.workdir))
    try:
        rng = np.random.default_rng(0)
        logits = rng.standard_normal((args.rows, args.classes), dtype=np.float32)
        y = np.arange(args.rows) % args.classes
        store = LogitStore.create(workdir / "store", np.arange(args.rows), y, list(range(args.classes)), n_folds=5)
        npy = workdir / "plain.npy"
        size_mb = logits.nbytes / 1e6

        write_store, write_np, read_store, read_np = [], [], [], []
        for i in range(args.repeats):
            write_np.append(_timed(lambda: np.save(npy, logits)))
            write_store.append(_timed(lambda: store.put("bench", logits, overwrite=True)))
            read_np.append(_timed(lambda: np.load(npy)))
            read_store.append(_timed(lambda: store.oof("bench")))
        np.testing.assert_array_equal(store.oof("bench"), logits)

        tracemalloc.start()
        loaded = store.oof("bench")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del loaded

        for i in range(args.entries - 1):
            store.put(f"model{i:02d}", logits, meta={"i": i})
        open_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            opened = LogitStore(store.path)
            names = opened.models()
            infos = [opened.entry(n) for n in names]
            open_times.append(time.perf_counter() - start)
        assert len(infos) == args.entries

        med = statistics.median
        w_ratio, r_ratio = med(write_store) / med(write_np), med(read_store) / med(read_np)
        print(f"entry: {args.rows:,} x {args.classes:,} float32 = {size_mb:,.0f} MB; median of {args.repeats} runs")
        print(f"{'operation':<44}{'seconds':>10}{'ratio':>9}{'target':>10}  status")
        rows = [
            ("np.save (baseline)", med(write_np), None, None),
            ("LogitStore.put (validate+checksum+atomic)", med(write_store), w_ratio, 1.5),
            ("np.load (baseline)", med(read_np), None, None),
            ("LogitStore.oof (full read)", med(read_store), r_ratio, 1.2),
        ]
        for label, seconds, ratio, target in rows:
            status = "" if target is None else ("OK" if ratio <= target else "MISSED")
            print(f"{label:<44}{seconds:>10.3f}{'' if ratio is None else f'{ratio:.2f}x':>9}"
                  f"{'' if target is None else f'<= {target}x':>10}  {status}")
        open_ok = "OK" if med(open_times) < 0.5 else "MISSED"
        print(f"{f'open + models() + entry() x{args.entries}':<44}{med(open_times):>10.4f}{'':>9}{'< 0.5 s':>10}  {open_ok}")
        print(f"{'peak traced memory reading one entry':<44}{peak / 1e6:>9.0f}M{peak / logits.nbytes:>8.2f}x  (of the array's size)")
        if args.import_rows:
            _import_benchmark(workdir, args.import_rows, args.repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _import_benchmark(workdir: Path, sizes: list[int], repeats: int, n_classes: int = 10) -> None:
    """``import_predictions`` of an exported-layout CSV vs ``pandas.read_csv`` of the same file."""
    import pandas as pd

    print(f"\nimport-oof of a CSV with string ids and {n_classes} class columns (OOF rows + 10 % test rows); "
          f"median of {min(repeats, 3)} runs")
    print(f"{'rows':>10}{'read_csv s':>12}{'import s':>10}{'ratio':>8}{'target':>9}  status")
    rng = np.random.default_rng(0)
    for n in sizes:
        n_test = max(n // 10, 1)
        ids = np.char.add("img_", np.arange(n).astype(str))
        test_ids = np.char.add("test_", np.arange(n_test).astype(str))
        store = LogitStore.create(workdir / f"import_{n}", ids, np.arange(n) % n_classes, list(range(n_classes)),
                                  n_folds=5, test_ids=test_ids)
        probs = rng.dirichlet(np.ones(n_classes), size=n + n_test).astype(np.float32)
        table = pd.DataFrame(probs, columns=[str(c) for c in range(n_classes)])
        order = rng.permutation(n + n_test)  # rows in any order, as a user's file would be
        table.insert(0, "split", np.where(np.arange(n + n_test) < n, "oof", "test")[order])
        table.insert(0, "id", np.concatenate([ids, test_ids])[order])
        table[[str(c) for c in range(n_classes)]] = probs[order]
        csv = workdir / f"import_{n}.csv"
        table.to_csv(csv, index=False, float_format="%.7g")
        read_times, import_times = [], []
        for _ in range(min(repeats, 3)):
            read_times.append(_timed(lambda: pd.read_csv(csv)))
            import_times.append(_timed(lambda: store.import_predictions("imported", csv, overwrite=True)))
        ratio = statistics.median(import_times) / statistics.median(read_times)
        print(f"{n:>10,}{statistics.median(read_times):>12.3f}{statistics.median(import_times):>10.3f}{ratio:>7.2f}x"
              f"{'<= 3x':>9}  {'OK' if ratio <= 3 else 'MISSED'}")
        shutil.rmtree(workdir / f"import_{n}", ignore_errors=True)
        csv.unlink()


if __name__ == "__main__":
    main()
