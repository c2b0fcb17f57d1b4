"""Every bad input raises a specific StoreError naming the culprit and changes nothing."""

import numpy as np
import pytest

from helpers import snapshot
from ensemble_kit.errors import (
    EntryExistsError,
    FoldMismatchError,
    IdMismatchError,
    InvalidValuesError,
    ShapeMismatchError,
    StoreError,
    ValidationError,
)

OK_OOF = np.zeros((60, 3))
OK_TEST = np.zeros((3, 12, 3))


def _nan_at(row):
    a = np.zeros((60, 3))
    a[row, 1] = np.nan
    return a


def _probs(bad_row_value):
    p = np.full((60, 3), 1 / 3)
    p[7] = bad_row_value
    return p


CASES = {
    "oof rows": (lambda s: s.put("m", np.zeros((59, 3)), OK_TEST), ShapeMismatchError, "expected 60 train rows"),
    "oof classes": (lambda s: s.put("m", np.zeros((60, 4)), OK_TEST), ShapeMismatchError, "expected 3 classes.*got 4"),
    "oof ndim": (lambda s: s.put("m", np.zeros(60), OK_TEST), ShapeMismatchError, "expected 2-D"),
    "test folds": (lambda s: s.put("m", OK_OOF, np.zeros((2, 12, 3))), ShapeMismatchError, "expected 3 folds"),
    "test rows": (lambda s: s.put("m", OK_OOF, np.zeros((11, 3))), ShapeMismatchError, "expected 12 test rows"),
    "nan": (lambda s: s.put("m", _nan_at(17), OK_TEST), InvalidValuesError, r"NaN or inf.*row 17 \(id 's017'\)"),
    "inf test": (lambda s: s.put("m", OK_OOF, np.full((12, 3), np.inf)), InvalidValuesError, "entry 'm' test.*NaN or inf"),
    "probs range": (lambda s: s.put("m", _probs([1.5, -0.25, -0.25]), OK_TEST, kind="probs"), InvalidValuesError, r"1.5 at row 7 \(id 's007'\).*outside \[0, 1\]"),
    "probs sum": (lambda s: s.put("m", _probs([0.5, 0.5, 0.5]), OK_TEST, kind="probs"), InvalidValuesError, r"row 7 \(id 's007'\) sums to 1.5"),
    "kind": (lambda s: s.put("m", OK_OOF, OK_TEST, kind="logprobs"), ValidationError, "kind must be one of"),
    "name": (lambda s: s.put("../evil", OK_OOF, OK_TEST), ValidationError, "Invalid entry name '../evil'"),
    "meta": (lambda s: s.put("m", OK_OOF, OK_TEST, meta={"f": object()}), ValidationError, "meta is not JSON"),
    "fold range": (lambda s: s.put_fold("m", 7, np.zeros((20, 3)), np.zeros((12, 3))), FoldMismatchError, "got 7"),
    "fold rows": (lambda s: s.put_fold("m", 0, np.zeros((21, 3)), np.zeros((12, 3))), FoldMismatchError, "fold 0 holds 20"),
    "fold test shape": (lambda s: s.put_fold("m", 0, np.zeros((20, 3)), np.zeros((3, 12, 3))), ShapeMismatchError, "fold 0 test"),
    "existing": (lambda s: s.put("kept", OK_OOF, OK_TEST), EntryExistsError, "'kept' already exists"),
    "existing fold": (lambda s: s.put_fold("kept", 0, np.zeros((20, 3)), np.zeros((12, 3))), EntryExistsError, "Fold 0 of entry 'kept'"),
    "import missing id": (lambda s: s.import_predictions("m", _table(s).iloc[1:], test=_table(s, "test")), IdMismatchError, r"1 missing \(e.g. \['s000'\]\)"),
    "import extra id": (lambda s: s.import_predictions("m", _with_extra(_table(s)), test=_table(s, "test")), IdMismatchError, r"1 unknown \(e.g. \['zzz'\]\)"),
    "import dup id": (lambda s: s.import_predictions("m", _dup(_table(s)), test=_table(s, "test")), IdMismatchError, r"duplicated ids \['s000'\]"),
    "import class col": (lambda s: s.import_predictions("m", _table(s).drop(columns="2"), test=_table(s, "test")), IdMismatchError, r"missing class column\(s\) \['2'\]"),
    "import id col": (lambda s: s.import_predictions("m", _table(s), id_col="ID"), IdMismatchError, "no id column 'ID'"),
}


def _table(store, split="oof"):
    import pandas as pd

    ids = store.train_ids if split == "oof" else store.test_ids
    frame = pd.DataFrame(np.full((len(ids), 3), 1 / 3), columns=["0", "1", "2"])
    frame.insert(0, "id", ids)
    return frame


def _with_extra(frame):
    row = frame.iloc[[0]].copy()
    row["id"] = "zzz"
    return frame._append(row) if hasattr(frame, "_append") else __import__("pandas").concat([frame, row])


def _dup(frame):
    import pandas as pd

    return pd.concat([frame, frame.iloc[[0]]])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_and_store_unchanged(store, case):
    store.put("kept", np.full((60, 3), 0.5), np.full((3, 12, 3), 0.5))
    action, error, message = CASES[case]
    before = snapshot(store.path)
    with pytest.raises(error, match=message) as raised:
        action(store)
    assert isinstance(raised.value, (StoreError, ValidationError))
    assert snapshot(store.path) == before
    assert store.models() == ["kept"]
    np.testing.assert_array_equal(store.oof("kept"), 0.5)
    store.verify()
