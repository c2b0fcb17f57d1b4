import numpy as np
import pandas as pd
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.metrics import log_softmax, softmax


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_import_round_trip(store, rng, tmp_path, suffix):
    oof, test = rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3))
    store.put("m", oof, test)
    out = store.export("m", tmp_path / f"m{suffix}")
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(table.columns) == ["id", "split", "fold", "0", "1", "2"]
    assert (table["split"] == "oof").sum() == 60 and (table["split"] == "test").sum() == 12
    oof_rows = table[table["split"] == "oof"]
    np.testing.assert_array_equal(oof_rows["fold"], store.folds)
    np.testing.assert_allclose(oof_rows[["0", "1", "2"]].sum(axis=1), 1.0, rtol=1e-6)
    store.import_predictions("back", out)
    np.testing.assert_allclose(store.oof("back"), log_softmax(oof), atol=1e-5)
    np.testing.assert_allclose(softmax(store.test("back")), softmax(test.mean(axis=0)), atol=1e-5)


def test_import_shuffled_rows_and_separate_test_table(store, rng, tmp_path):
    p = rng.dirichlet(np.ones(3), size=60)
    frame = pd.DataFrame(p, columns=["0", "1", "2"])
    frame.insert(0, "ID", store.train_ids)
    frame = frame.sample(frac=1.0, random_state=0)
    frame.to_csv(tmp_path / "oof.csv", index=False)
    test = pd.DataFrame(np.full((12, 3), 1 / 3), columns=["0", "1", "2"])
    test.insert(0, "ID", store.test_ids)
    store.import_predictions("mine", tmp_path / "oof.csv", test=test, id_col="ID", kind="probs",
                             meta={"source": "kaggle kernel"})
    np.testing.assert_allclose(np.exp(store.oof("mine")), p, rtol=1e-5)
    assert store.entry("mine").meta == {"source": "kaggle kernel"}


def test_export_logits(store, rng, tmp_path):
    oof = rng.normal(size=(60, 3))
    store.put("m", oof, rng.normal(size=(12, 3)))
    table = pd.read_csv(store.export("m", tmp_path / "m.csv", kind="logits"))
    np.testing.assert_allclose(table[table["split"] == "oof"][["0", "1", "2"]], log_softmax(oof), atol=1e-6)


def test_string_classes_and_integer_ids(tmp_path, rng):
    store = LogitStore.create(tmp_path / "s", np.arange(10), ["ok", "defect"] * 5, ["ok", "defect"], n_folds=2)
    store.put("m", rng.normal(size=(10, 2)))
    table = pd.read_csv(store.export("m", tmp_path / "m.csv"))
    assert list(table.columns) == ["id", "split", "fold", "ok", "defect"]
    store.import_predictions("again", tmp_path / "m.csv")
    assert store.models() == ["again", "m"]


def test_unsupported_table_format(store, rng, tmp_path):
    store.put("m", rng.normal(size=(60, 3)), rng.normal(size=(12, 3)))
    with pytest.raises(ValueError, match="unsupported table format '.xlsx'"):
        store.export("m", tmp_path / "m.xlsx")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_string_ids_round_trip_as_text(tmp_path, rng, suffix):
    ids = ["000", "007", "NA", "nan", "None", "1e3", "-0"]
    test_ids = ["010", "NULL"]
    store = LogitStore.create(tmp_path / "s", ids, list("abababa"), ["a", "b"], folds=[0, 1, 0, 1, 0, 1, 1],
                              test_ids=test_ids)
    store.put("m", rng.normal(size=(7, 2)), rng.normal(size=(2, 2, 2)))
    out = store.export("m", tmp_path / f"m{suffix}")
    store.import_predictions("back", out)
    np.testing.assert_allclose(store.oof("back"), log_softmax(store.oof("m")), atol=1e-5)


@pytest.mark.parametrize("reserved", ["id", "fold", "split"])
def test_classes_named_like_table_columns_are_refused_by_name(tmp_path, reserved):
    from ensemble_kit.errors import ValidationError
    from helpers import snapshot

    store = LogitStore.create(tmp_path / "s", np.arange(6), [reserved, "b"] * 3, [reserved, "b"], n_folds=3)
    store.put("m", np.random.default_rng(0).normal(size=(6, 2)))
    before = snapshot(store.path)
    with pytest.raises(ValidationError, match=rf"classes \['{reserved}'\]"):
        store.export("m", tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists() and snapshot(store.path) == before


def test_import_names_unreadable_class_values(store, tmp_path):
    from ensemble_kit.errors import ValidationError

    frame = pd.DataFrame({"id": store.train_ids, "0": "x", "1": 0.5, "2": 0.5})
    with pytest.raises(ValidationError, match="class columns must be numeric"):
        store.import_predictions("m", frame, kind="probs")
