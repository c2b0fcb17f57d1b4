"""Several processes writing folds and entries into one store at once lose nothing."""

import multiprocessing

import numpy as np

from ensemble_kit import LogitStore

N_PROCS = 4


def _writer(path: str, worker: int) -> None:
    store = LogitStore(path)
    rng = np.random.default_rng(worker)
    test = np.full((8, 3), float(worker))
    # every worker writes fold `worker` of two shared entries, plus a whole entry of its own
    for name in ("shared_a", "shared_b"):
        rows = store.fold_indices(worker)
        oof = np.full((len(rows), 3), float(worker)) + rng.normal(size=(len(rows), 3)) * 0
        store.put_fold(name, worker, oof, test, meta={f"worker{worker}": True})
    store.put(f"own{worker}", np.full((80, 3), float(worker)), np.full((N_PROCS, 8, 3), float(worker)))


def test_four_processes_write_concurrently(tmp_path):
    store = LogitStore.create(tmp_path / "s", np.arange(80), np.arange(80) % 3, [0, 1, 2],
                              n_folds=N_PROCS, test_ids=np.arange(8))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(store.path), w)) for w in range(N_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = LogitStore(store.path)
    store.verify()
    assert store.models() == ["own0", "own1", "own2", "own3", "shared_a", "shared_b"]
    assert store.incomplete() == {}
    for name in ("shared_a", "shared_b"):
        oof = store.oof(name)
        np.testing.assert_array_equal(oof[:, 0], store.folds.astype(np.float32))
        np.testing.assert_array_equal(store.test(name, reduce=None)[:, 0, 0], np.arange(N_PROCS))
        assert store.entry(name).meta == {f"worker{w}": True for w in range(N_PROCS)}
    for w in range(N_PROCS):
        np.testing.assert_array_equal(store.oof(f"own{w}"), w)
