"""CSV/Parquet import and export of store entries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import pandas as pd

from ensemble_kit._optional import import_optional
from ensemble_kit.errors import IdMismatchError, StoreError, ValidationError
from ensemble_kit.metrics import log_softmax, softmax
from ensemble_kit.store._validate import ids_as_text

if TYPE_CHECKING:
    from ensemble_kit.store._store import LogitStore

TableLike = Union[pd.DataFrame, str, "os.PathLike[str]"]
ID_COL = "id"
SPLIT_COL = "split"
FOLD_COL = "fold"
RESERVED_COLUMNS = (ID_COL, SPLIT_COL, FOLD_COL)
_TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def _table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise ValidationError(
            f"{str(path)!r}: unsupported table format {suffix!r}; use one of {_TABLE_SUFFIXES}."
        )
    return "csv" if suffix == ".csv" else "parquet"


def load_table(table: TableLike, *, what: str, id_col: str | None = None) -> pd.DataFrame:
    """A DataFrame from a DataFrame, CSV or Parquet file; ``id_col`` is read as text, never parsed.

    ``"007"`` stays ``"007"`` and ``"NA"``/``"nan"`` are ids, not missing values.
    """
    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.is_file():
        raise ValidationError(f"{what}: file {str(path)!r} does not exist.")
    try:
        if _table_format(path) == "csv":
            if id_col is None:
                return pd.read_csv(path)
            # Missing-value markers stay active for the class columns only.
            return pd.read_csv(path, dtype={id_col: str}, keep_default_na=False,
                               na_values={c: _NA_MARKERS for c in _header(path) if c != id_col})
        import_optional("pyarrow", feature="Reading Parquet tables")
        return pd.read_parquet(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, OSError) as exc:
        raise ValidationError(f"{what}: {str(path)!r} cannot be read as a table ({type(exc).__name__}: {exc}).") from exc


_NA_MARKERS = ["", "NA", "N/A", "NaN", "nan", "NULL", "null", "None", "-NaN", "-nan", "#N/A"]


def _header(path: Path) -> list[str]:
    return list(pd.read_csv(path, nrows=0).columns)


def read_prediction_tables(
    store: LogitStore, name: str, table: TableLike, *, test: TableLike | None, id_col: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Turn user tables into (oof, test) arrays in the store's row and class order."""
    frame = load_table(table, what=f"entry {name!r} predictions", id_col=id_col)
    if test is None and SPLIT_COL in frame.columns:
        splits = set(frame[SPLIT_COL].astype(str).unique()) - {"oof", "test"}
        if splits:
            raise ValidationError(
                f"entry {name!r}: column {SPLIT_COL!r} may only hold 'oof' or 'test'; found {sorted(splits)}."
            )
        is_test = frame[SPLIT_COL].astype(str) == "test"
        oof_frame, test_frame = frame[~is_test], (frame[is_test] if is_test.any() else None)
    else:
        oof_frame = frame
        test_frame = None if test is None else load_table(test, what=f"entry {name!r} test predictions", id_col=id_col)
    oof = _align(oof_frame, store.train_ids, store.classes, id_col=id_col, where=f"entry {name!r} oof table")
    test_values = None
    if test_frame is not None:
        if store.test_ids is None:
            raise StoreError(f"entry {name!r}: test rows given, but the store has no test ids.")
        test_values = _align(test_frame, store.test_ids, store.classes, id_col=id_col,
                             where=f"entry {name!r} test table")
    return oof, test_values


def _align(frame: pd.DataFrame, ids: np.ndarray, classes: list, *, id_col: str, where: str) -> np.ndarray:
    if id_col not in frame.columns:
        raise IdMismatchError(
            f"{where}: no id column {id_col!r}; columns are {list(frame.columns)[:20]}. "
            "Pass id_col=... naming the column that holds sample ids."
        )
    class_cols = [str(c) for c in classes]
    if id_col in class_cols:
        raise ValidationError(f"{where}: the id column {id_col!r} has the name of a class; pass id_col=... naming "
                              "another column.")
    columns = {str(c): c for c in frame.columns}
    missing_cols = [c for c in class_cols if c not in columns]
    if missing_cols:
        raise IdMismatchError(
            f"{where}: missing class column(s) {missing_cols[:20]}; expected one column per class "
            f"named {class_cols[:20]}."
        )
    # Hash joins on text ids: linear in the rows (numpy's set routines on object arrays are quadratic).
    given = pd.Index(ids_as_text(frame[id_col].to_numpy()))
    if given.has_duplicates:
        raise IdMismatchError(f"{where}: duplicated ids {sorted(set(given[given.duplicated()]))[:10]}.")
    expected = ids_as_text(ids)
    position = given.get_indexer(expected)
    missing = expected[position < 0]
    extra = given[~given.isin(expected)]
    if len(missing) or len(extra):
        raise IdMismatchError(
            f"{where}: ids do not match the store: {len(missing)} missing (e.g. {sorted(missing.tolist())[:5]}), "
            f"{len(extra)} unknown (e.g. {sorted(extra.tolist())[:5]})."
        )
    values = frame[[columns[c] for c in class_cols]].to_numpy()
    if not np.issubdtype(values.dtype, np.number):
        raise ValidationError(f"{where}: class columns must be numeric; got dtype {values.dtype}.")
    return values[position]


def write_prediction_table(store: LogitStore, name: str, path: Path, *, kind: str) -> Path:
    if kind not in ("logits", "probs"):
        raise ValidationError(f"kind must be 'logits' or 'probs'; got {kind!r}.")
    fmt = _table_format(path)
    transform = softmax if kind == "probs" else log_softmax
    class_cols = [str(c) for c in store.classes]
    reserved = sorted(set(class_cols) & set(RESERVED_COLUMNS))
    if reserved:
        raise ValidationError(
            f"Cannot export entry {name!r}: classes {reserved} have the names of the table's own columns "
            f"{list(RESERVED_COLUMNS)}, so the table could not be read back. Export the arrays with store.oof()/"
            "store.test() instead, or rename those classes when creating the store."
        )
    parts = [_frame(store.train_ids, "oof", store.folds, transform(store.oof(name)), class_cols)]
    if store.test_ids is not None:
        test_fold = np.full(len(store.test_ids), -1, dtype=np.int64)
        parts.append(_frame(store.test_ids, "test", test_fold, transform(store.test(name)), class_cols))
    table = pd.concat(parts, ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        table.to_csv(path, index=False, float_format="%.9g")
    else:
        import_optional("pyarrow", feature="Writing Parquet tables")
        table.to_parquet(path, index=False)
    return path


def _frame(ids: np.ndarray, split: str, folds: np.ndarray, values: np.ndarray, class_cols: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(values.astype(np.float64), columns=class_cols)
    frame.insert(0, FOLD_COL, folds)
    frame.insert(0, SPLIT_COL, split)
    frame.insert(0, ID_COL, ids)
    return frame
