import numpy as np
import pytest

from ensemble_kit.errors import EntryExistsError, EntryIncompleteError, FoldMismatchError


def _fold_arrays(store, rng, k):
    return rng.normal(size=(len(store.fold_indices(k)), 3)), rng.normal(size=(12, 3))


def test_entry_visible_only_when_every_fold_present(store, rng):
    expected_oof = np.zeros((60, 3), dtype=np.float32)
    expected_test = []
    for k in [2, 0, 1]:
        oof, test = _fold_arrays(store, rng, k)
        expected_oof[store.fold_indices(k)] = oof
        expected_test.append((k, test))
        info = store.put_fold("m", fold=k, oof=oof, test=test, meta={"fold_score": k})
        if k != 1:
            assert store.models() == [] and "m" in store.incomplete()
            with pytest.raises(EntryIncompleteError, match=r"folds \[.*\] are missing"):
                store.oof("m")
    assert info.complete and store.models() == ["m"] and store.incomplete() == {}
    np.testing.assert_allclose(store.oof("m"), expected_oof, rtol=1e-6)
    by_fold = np.stack([t for _, t in sorted(expected_test, key=lambda kt: kt[0])])
    np.testing.assert_allclose(store.test("m", reduce=None), by_fold, rtol=1e-6)
    assert store.entry("m").fold_meta == {0: {"fold_score": 0}, 1: {"fold_score": 1}, 2: {"fold_score": 2}}
    files = {p.name.split("-")[0] for p in (store.path / "entries" / "m").iterdir()}
    assert files == {"entry.json", "oof", "test"}  # per-fold pieces consolidated and removed
    store.verify()


def test_incomplete_lists_missing_folds(store, rng):
    store.put_fold("m", 1, *_fold_arrays(store, rng, 1))
    assert store.incomplete() == {"m": (0, 2)}
    assert store.entry("m").missing_folds == (0, 2)


def test_rows_must_be_exactly_the_fold(store, rng):
    n1 = len(store.fold_indices(1))
    with pytest.raises(FoldMismatchError, match=f"fold 1 holds {n1} training samples but oof has {n1 + 1} rows"):
        store.put_fold("m", 1, np.zeros((n1 + 1, 3)), np.zeros((12, 3)))
    wrong_ids = store.train_ids[store.fold_indices(0)]
    with pytest.raises(FoldMismatchError, match="not fold 1's samples"):
        store.put_fold("m", 1, np.zeros((n1, 3)), np.zeros((12, 3)), ids=wrong_ids[:n1])
    assert store.incomplete() == {} and store.models() == []


def test_ids_reorder_rows(store, rng):
    rows = store.fold_indices(0)
    ids = store.train_ids[rows][::-1]
    oof = rng.normal(size=(len(rows), 3))
    store.put_fold("m", 0, oof, np.zeros((12, 3)), ids=ids)
    for k in (1, 2):
        store.put_fold("m", k, np.zeros((len(store.fold_indices(k)), 3)), np.zeros((12, 3)))
    np.testing.assert_allclose(store.oof("m")[rows], oof[::-1], rtol=1e-6)


@pytest.mark.parametrize("fold", [3, -1, 1.0, True])
def test_fold_out_of_range(store, fold):
    with pytest.raises(FoldMismatchError, match=r"fold must be an integer in 0..2"):
        store.put_fold("m", fold, np.zeros((20, 3)), np.zeros((12, 3)))


def test_fold_overwrite(store, rng):
    for k in range(3):
        store.put_fold("m", k, *_fold_arrays(store, rng, k))
    before = store.oof("m")
    new_oof, new_test = _fold_arrays(store, rng, 1)
    with pytest.raises(EntryExistsError, match="Fold 1 of entry 'm' is already stored"):
        store.put_fold("m", 1, new_oof, new_test)
    np.testing.assert_array_equal(store.oof("m"), before)
    store.put_fold("m", 1, new_oof, new_test, overwrite=True)
    after = store.oof("m")
    rows = store.fold_indices(1)
    np.testing.assert_allclose(after[rows], new_oof, rtol=1e-6)
    others = np.setdiff1d(np.arange(60), rows)
    np.testing.assert_array_equal(after[others], before[others])
    np.testing.assert_allclose(store.test("m", reduce=None)[1], new_test, rtol=1e-6)
    store.verify()


def test_partial_fold_overwrite_before_complete(store, rng):
    store.put_fold("m", 0, np.zeros((20, 3)), np.zeros((12, 3)))
    with pytest.raises(EntryExistsError):
        store.put_fold("m", 0, np.ones((20, 3)), np.ones((12, 3)))
    store.put_fold("m", 0, np.ones((20, 3)), np.ones((12, 3)), overwrite=True)
    for k in (1, 2):
        store.put_fold("m", k, np.zeros((20, 3)), np.zeros((12, 3)))
    np.testing.assert_array_equal(store.oof("m")[store.fold_indices(0)], 1)
