import json

import numpy as np
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.errors import (
    IdMismatchError,
    NotAStoreError,
    SchemaVersionError,
    ShapeMismatchError,
    StoreCorruptedError,
    StoreExistsError,
    ValidationError,
)
from ensemble_kit.store._store import STORE_MANIFEST


def test_create_fixes_stratified_seeded_folds(tmp_path):
    y = np.array(["cat", "dog", "eel"] * 20)
    a = LogitStore.create(tmp_path / "a", np.arange(60), y, ["cat", "dog", "eel"], n_folds=4, seed=7)
    b = LogitStore.create(tmp_path / "b", np.arange(60), y, ["cat", "dog", "eel"], n_folds=4, seed=7)
    c = LogitStore.create(tmp_path / "c", np.arange(60), y, ["cat", "dog", "eel"], n_folds=4, seed=8)
    np.testing.assert_array_equal(a.folds, b.folds)
    assert not np.array_equal(a.folds, c.folds)
    assert a.n_folds == 4 and sorted(np.unique(a.folds)) == [0, 1, 2, 3]
    for k in range(4):  # stratified: every fold holds 5 of each class
        np.testing.assert_array_equal(np.bincount(a.y[a.folds == k]), [5, 5, 5])
    np.testing.assert_array_equal(a.y, np.arange(60) % 3)
    assert a.classes == ["cat", "dog", "eel"]


def test_open_round_trips_everything(store):
    again = LogitStore(store.path)
    np.testing.assert_array_equal(again.folds, store.folds)
    np.testing.assert_array_equal(again.y, store.y)
    assert again.train_ids.tolist() == store.train_ids.tolist()
    assert again.test_ids.tolist() == [f"t{i:03d}" for i in range(12)]
    assert again.classes == [0, 1, 2] and again.n_classes == 3
    manifest = json.loads((store.path / STORE_MANIFEST).read_text())
    assert manifest["schema_version"] == 1 and manifest["fold_seed"] == 0


def test_explicit_folds_are_kept(tmp_path):
    folds = np.array([0, 1, 2] * 4)
    store = LogitStore.create(tmp_path / "s", np.arange(12), np.arange(12) % 2, [0, 1], folds=folds)
    np.testing.assert_array_equal(store.folds, folds)
    assert store.n_folds == 3
    np.testing.assert_array_equal(store.fold_indices(1), [1, 4, 7, 10])


@pytest.mark.parametrize("folds, message", [([0, 0, 0, 0], "at least 2 folds"), ([0.0, 1.0, 0.0, 1.0], "integers")])
def test_bad_explicit_folds(tmp_path, folds, message):
    with pytest.raises(ValidationError, match=message):
        LogitStore.create(tmp_path / "s", np.arange(4), [0, 1, 0, 1], [0, 1], folds=folds)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("folds, labels", [([0, 2, 0, 2], [0, 2]), ([3, -1, -1, 3], [-1, 3])])
def test_explicit_fold_labels_are_mapped_and_kept(tmp_path, folds, labels):
    store = LogitStore.create(tmp_path / "s", np.arange(4), [0, 1, 0, 1], [0, 1], folds=folds)
    assert store.n_folds == 2 and store.fold_labels == labels and LogitStore(store.path).fold_labels == labels
    np.testing.assert_array_equal(store.folds, np.searchsorted(labels, folds))


def test_create_refuses_existing_store(store):
    with pytest.raises(StoreExistsError, match="already exists"):
        LogitStore.create(store.path, np.arange(60), np.arange(60) % 3, [0, 1, 2])
    LogitStore(store.path).verify()


def test_create_into_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    store = LogitStore.create(tmp_path / "empty", np.arange(10), np.arange(10) % 2, [0, 1], n_folds=2)
    assert store.n_folds == 2


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(y=[0, 1, 5, 0, 1, 0, 1, 0]), ValidationError, r"not in classes: \[5\]"),
        (dict(train_ids=[1, 2, 3, 3, 4, 5, 6, 7]), IdMismatchError, r"duplicated ids: \[3\]"),
        (dict(y=[0, 1]), ShapeMismatchError, "one label per training id"),
        (dict(classes=[0]), ValidationError, "at least 2 classes"),
        (dict(classes=[0, 1, 1]), ValidationError, "duplicated"),
        (dict(classes=[0, 1.5]), ValidationError, "strings or integers"),
        (dict(n_folds=5), ValidationError, "class 0 has 4"),
        (dict(test_ids=["a", "a"]), IdMismatchError, "test_ids must be unique"),
        (dict(dtype="float64"), ValidationError, "float32"),
    ],
)
def test_create_bad_input(tmp_path, kwargs, error, message):
    args = dict(train_ids=np.arange(8), y=[0, 1] * 4, classes=[0, 1], n_folds=2) | kwargs
    with pytest.raises(error, match=message):
        LogitStore.create(tmp_path / "s", **args)
    assert not (tmp_path / "s").exists()


def test_open_not_a_store(tmp_path):
    with pytest.raises(NotAStoreError, match="no such directory"):
        LogitStore(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotAStoreError, match="ensemble_kit_store.json is missing"):
        LogitStore(tmp_path / "plain")
    (tmp_path / "plain" / STORE_MANIFEST).write_text('{"format": "something-else"}')
    with pytest.raises(NotAStoreError, match="does not describe a logit store"):
        LogitStore(tmp_path / "plain")


def test_open_refuses_newer_schema_and_leaves_it_untouched(store):
    manifest_path = store.path / STORE_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    before = manifest_path.read_bytes()
    with pytest.raises(SchemaVersionError, match="schema version 99.*reads schema versions 1 to 1"):
        LogitStore(store.path)
    assert manifest_path.read_bytes() == before


def test_open_detects_tampered_folds(store):
    folds_file = store.path / "folds.npy"
    data = bytearray(folds_file.read_bytes())
    data[-1] ^= 1
    folds_file.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptedError, match="folds.npy.*checksum"):
        LogitStore(store.path)


def test_store_files_are_plain_numpy_and_json(store, rng):
    store.put("m", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    entry_dir = store.path / "entries" / "m"
    document = json.loads((entry_dir / "entry.json").read_text())
    oof = np.load(entry_dir / document["oof"]["file"], allow_pickle=False)
    np.testing.assert_allclose(oof, store.oof("m"))
    assert np.load(store.path / "train_ids.npy", allow_pickle=False)[0] == "s000"
