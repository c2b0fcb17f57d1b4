import numpy as np
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.errors import EntryExistsError, EntryNotFoundError, ShapeMismatchError, StoreError
from ensemble_kit.metrics import log_softmax


def test_put_then_read_in_train_order(store, rng):
    oof, test = rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3))
    info = store.put("cnn", oof, test, meta={"lr": 0.1, "tags": ["a"]})
    assert info.complete and info.folds_present == (0, 1, 2) and info.kind_written == "logits"
    again = LogitStore(store.path)
    assert again.models() == ["cnn"] and "cnn" in again
    np.testing.assert_allclose(again.oof("cnn"), oof, rtol=1e-6)
    assert again.oof("cnn").dtype == np.float32
    np.testing.assert_allclose(again.test("cnn"), test.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.test("cnn", reduce=None), test, rtol=1e-6)
    assert again.entry("cnn").meta == {"lr": 0.1, "tags": ["a"]}


def test_lists_stack_models(store, rng):
    a, b = rng.normal(size=(2, 60, 3))
    store.put("a", a, rng.normal(size=(3, 12, 3)))
    store.put("b", b, rng.normal(size=(3, 12, 3)))
    stacked = store.oof(["b", "a"])
    assert stacked.shape == (2, 60, 3)
    np.testing.assert_allclose(stacked[0], b, rtol=1e-6)
    assert store.test(["a", "b"]).shape == (2, 12, 3)
    assert store.test(["a", "b"], reduce=None).shape == (2, 3, 12, 3)


def test_single_test_prediction_keeps_fold_axis_of_one(store, rng):
    test = rng.normal(size=(12, 3))
    info = store.put("full_fit", rng.normal(size=(60, 3)), test)
    assert info.test_folds == 1
    assert store.test("full_fit", reduce=None).shape == (1, 12, 3)
    np.testing.assert_allclose(store.test("full_fit"), test, rtol=1e-6)


def test_probs_are_stored_as_log_probs(store, rng):
    p = rng.dirichlet(np.ones(3), size=60)
    p[0] = [1.0, 0.0, 0.0]  # a hard zero must stay finite
    store.put("probs", p, rng.dirichlet(np.ones(3), size=(3, 12)), kind="probs")
    logits = store.oof("probs")
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(np.exp(logits[1:]), p[1:], rtol=1e-5)
    assert logits[0, 1] == pytest.approx(np.log(1e-12), rel=1e-6)
    assert store.entry("probs").kind_written == "probs"


def test_float16_store_returns_float32(tmp_path, rng):
    store = LogitStore.create(tmp_path / "s", np.arange(20), np.arange(20) % 2, [0, 1], n_folds=2, dtype="float16")
    oof = rng.normal(size=(20, 2))
    store.put("m", oof)
    assert store.oof("m").dtype == np.float32
    np.testing.assert_allclose(store.oof("m"), oof, atol=2e-3)
    assert store.entry("m").dtype == "float16"
    with pytest.raises(StoreError, match="overflow float16"):
        store.put("big", np.full((20, 2), 1e6))


def test_overwrite_replaces_and_cleans_old_files(store, rng):
    store.put("m", np.zeros((60, 3)), np.zeros((3, 12, 3)))
    with pytest.raises(EntryExistsError, match="'m' already exists.*overwrite=True"):
        store.put("m", np.ones((60, 3)), np.ones((3, 12, 3)))
    np.testing.assert_array_equal(store.oof("m"), 0)
    store.put("m", np.ones((60, 3)), np.ones((3, 12, 3)), overwrite=True)
    np.testing.assert_array_equal(store.oof("m"), 1)
    files = sorted(p.name for p in (store.path / "entries" / "m").iterdir())
    assert len(files) == 3  # entry.json + one oof + one test: the old versions are gone


def test_mmap_read_is_read_only(store, rng):
    store.put("m", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    mapped = store.oof("m", mmap=True)
    assert isinstance(mapped, np.memmap)
    with pytest.raises(ValueError):
        mapped[0, 0] = 1.0


def test_test_required_when_store_has_test_ids(store):
    with pytest.raises(ShapeMismatchError, match="test predictions are required.*12 test ids"):
        store.put("m", np.zeros((60, 3)))
    assert store.models() == []


def test_store_without_test_ids_refuses_test(tmp_path):
    store = LogitStore.create(tmp_path / "s", np.arange(10), np.arange(10) % 2, [0, 1], n_folds=2)
    with pytest.raises(ShapeMismatchError, match="no test ids"):
        store.put("m", np.zeros((10, 2)), np.zeros((3, 2)))
    store.put("m", np.zeros((10, 2)))
    with pytest.raises(StoreError, match="no test set"):
        store.test("m")


def test_unknown_entry_names_stored_ones(store, rng):
    store.put("alpha", rng.normal(size=(60, 3)), rng.normal(size=(12, 3)))
    with pytest.raises(EntryNotFoundError, match=r"No entry 'beta'.*\['alpha'\]"):
        store.oof("beta")


def test_remove(store, rng):
    store.put("a", rng.normal(size=(60, 3)), rng.normal(size=(12, 3)))
    store.remove("a")
    assert store.models() == [] and not (store.path / "entries" / "a").exists()
    with pytest.raises(EntryNotFoundError):
        store.remove("a")


def test_leaderboard_sorted_by_metric(store):
    y = store.y
    good = np.eye(3)[y] * 4.0
    store.put("good", good, np.zeros((12, 3)), meta={"arch": "resnet"})
    store.put("flat", np.zeros((60, 3)), np.zeros((12, 3)))
    board = store.leaderboard("log_loss")
    assert board["model"].tolist() == ["good", "flat"]
    assert board.loc[1, "log_loss"] == pytest.approx(np.log(3))
    assert board.loc[0, "accuracy"] == 1.0 and board.loc[0, "meta.arch"] == "resnet"
    assert list(board.columns[:4]) == ["model", "log_loss", "accuracy", "f1_macro"]
    assert store.leaderboard("accuracy")["model"].tolist()[0] == "good"
    assert log_softmax(good).shape == (60, 3)
