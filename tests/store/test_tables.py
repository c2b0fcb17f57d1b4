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


# ---------------------------------------------------------------------- import edges: list ids, fold columns
def _probs_table(store, ids=None, **columns):
    frame = pd.DataFrame({"id": store.train_ids if ids is None else ids, **columns})
    for c in store.classes:
        frame[str(c)] = 1 / len(store.classes)
    return frame


def _test_table(store, **columns):
    return pd.DataFrame({"id": store.test_ids, **columns, "0": 0.2, "1": 0.3, "2": 0.5})


def test_a_parquet_list_id_column_is_a_named_error(store, tmp_path, capsys):
    from ensemble_kit.cli.main import main
    from ensemble_kit.errors import ValidationError
    from helpers import snapshot

    path = tmp_path / "oof.parquet"
    _probs_table(store, ids=[[i] for i in store.train_ids]).to_parquet(path)  # a list column in Parquet
    before = snapshot(store.path)
    with pytest.raises(ValidationError, match=r"column 'id' must hold one value per row.*row 0 .*\['s000'\]"):
        store.import_predictions("m", path)
    assert main(["import-oof", str(store.path), "m", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ensemble-kit import-oof: error: ") and "Traceback" not in err
    assert "column 'id'" in err and "row 0" in err and "60 row(s)" in err and "--id-col" in err
    assert snapshot(store.path) == before and store.models() == []


def test_one_list_among_the_ids_is_named_by_its_row(store):
    from ensemble_kit.errors import ValidationError

    ids = list(store.train_ids.astype(object))
    ids[7] = np.array(["s007", "x"])
    with pytest.raises(ValidationError, match=r"column 'id' .* row 7 \(counting from 0\) holds \['s007', 'x'\], and 1"):
        store.import_predictions("m", _probs_table(store, ids=ids))
    test = _test_table(store)
    test["id"] = [[t] for t in store.test_ids]
    with pytest.raises(ValidationError, match="test table: column 'id' must hold one value per row"):
        store.import_predictions("m", _probs_table(store), test=test)


@pytest.mark.parametrize("relabel", [lambda f: f + 1, lambda f: (f + 1) % 3, lambda f: 10 * f - 5,
                                     lambda f: np.array(["a", "b", "c"])[f], lambda f: f.astype(float)],
                         ids=["1..K", "permuted", "other-integers", "text", "floats"])
def test_a_fold_column_relabelling_the_stores_folds_is_accepted(store, rng, relabel):
    oof = rng.dirichlet(np.ones(3), size=60)
    frame = pd.DataFrame(oof, columns=["0", "1", "2"]).assign(id=store.train_ids, fold=relabel(store.folds))
    store.import_predictions("m", frame.sample(frac=1.0, random_state=0), test=_test_table(store))  # any row order
    np.testing.assert_allclose(np.exp(store.oof("m")), oof, rtol=1e-5)


def test_a_fold_column_of_another_split_is_refused_naming_rows(store, tmp_path, capsys):
    from ensemble_kit.cli.main import main
    from ensemble_kit.errors import FoldMismatchError
    from helpers import snapshot

    moved = np.array([3, 8, 14, 20, 33, 41, 57])  # 7 rows predicted in another fold than the store's
    other = store.folds.copy()
    other[moved] = (other[moved] + 1) % 3
    frame = _probs_table(store, fold=other + 1)  # and the folds labelled 1..3: the labels are not the fault
    before = snapshot(store.path)
    with pytest.raises(FoldMismatchError, match="describes another split than the store's folds") as raised:
        store.import_predictions("m", frame, test=_test_table(store))
    message = str(raised.value)
    assert "7 of 60 OOF rows disagree (row 3 (id 's003'): " \
           f"fold {other[3] + 1} here, fold {store.folds[3]} in the store; row 8 (id 's008')" in message
    assert "row 33" in message and "row 41" not in message and "and 2 more" in message  # the first 5, in table order
    path = tmp_path / "oof.csv"
    frame.to_csv(path, index=False)
    _test_table(store).to_csv(tmp_path / "test.csv", index=False)
    assert main(["import-oof", str(store.path), "m", str(path), "--test", str(tmp_path / "test.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ensemble-kit import-oof: error: ") and "another split" in err and "Traceback" not in err
    assert snapshot(store.path) == before and store.models() == []


@pytest.mark.parametrize("change", ["one-row-moved", "folds-merged", "more-folds"])
def test_every_kind_of_other_split_is_refused(store, change):
    from ensemble_kit.errors import FoldMismatchError

    folds = store.folds.copy()
    if change == "one-row-moved":
        folds[11] = (folds[11] + 1) % 3
    elif change == "folds-merged":
        folds[folds == 2] = 1  # a relabelling may rename folds, never join them
    else:
        folds[folds == 2] = 2 + np.arange((folds == 2).sum()) % 2  # one fold cut in two
    with pytest.raises(FoldMismatchError, match="another split") as raised:
        store.import_predictions("m", _probs_table(store, fold=folds), test=_test_table(store))
    if change == "one-row-moved":
        assert "1 of 60 OOF rows disagree (row 11 (id 's011')" in str(raised.value)


def test_a_fold_column_without_a_value_in_an_oof_row_is_refused(store):
    from ensemble_kit.errors import FoldMismatchError

    folds = store.folds.astype(float)
    folds[[4, 9]] = np.nan
    with pytest.raises(FoldMismatchError, match=r"no value in 2 OOF row\(s\) \(row 4 \(id 's004'\); row 9"):
        store.import_predictions("m", _probs_table(store, fold=folds), test=_test_table(store))


def test_fold_of_test_rows_and_tables_without_fold_column_are_not_checked(store, rng, tmp_path):
    # no fold column: nothing to check, the rows are taken as predicted on the store's folds
    store.import_predictions("plain", _probs_table(store), test=_test_table(store))
    # test rows (in the same table, or a separate one) belong to no fold: their fold is not read
    store.put("m", rng.normal(size=(60, 3)), rng.normal(size=(12, 3)))
    table = pd.read_csv(store.export("m", tmp_path / "m.csv"))
    table.loc[table["split"] == "test", "fold"] = 99
    store.import_predictions("back", table)
    store.import_predictions("separate", _probs_table(store, fold=store.folds + 1), test=_test_table(store, fold=7))
    assert store.models() == ["back", "m", "plain", "separate"]


def test_a_class_named_fold_is_a_class_column_not_a_fold_assignment(tmp_path):
    store = LogitStore.create(tmp_path / "s", np.arange(6), ["fold", "b"] * 3, ["fold", "b"], n_folds=3)
    frame = pd.DataFrame({"id": np.arange(6), "fold": [0.1, 0.9] * 3, "b": [0.9, 0.1] * 3})
    store.import_predictions("m", frame)
    np.testing.assert_allclose(np.exp(store.oof("m"))[:, 0], [0.1, 0.9] * 3, rtol=1e-5)
