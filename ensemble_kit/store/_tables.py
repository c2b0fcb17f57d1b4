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
from ensemble_kit.store._validate import IdText, match_ids

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
    """A DataFrame from a DataFrame, CSV or Parquet file; ``id_col`` is kept as the text written.

    ``"007"`` stays ``"007"`` and ``"NA"``/``"nan"`` are ids, not missing values: when pandas'
    (fast, parallel) reader parsed numbers or missing values out of the id column, that one
    column is read again as plain text.
    """
    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.is_file():
        raise ValidationError(f"{what}: file {str(path)!r} does not exist.")
    try:
        if _table_format(path) == "csv":
            frame = pd.read_csv(path)
            if id_col is not None and id_col in frame.columns and not _read_verbatim(frame[id_col]):
                frame[id_col] = pd.read_csv(path, usecols=[id_col], dtype=str, keep_default_na=False)[id_col]
            return frame
        import_optional("pyarrow", feature="Reading Parquet tables")
        return pd.read_parquet(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, OSError) as exc:
        raise ValidationError(f"{what}: {str(path)!r} cannot be read as a table ({type(exc).__name__}: {exc}).") from exc


def _read_verbatim(column: pd.Series) -> bool:
    """Whether a CSV column came back as the strings written (no number parsed, no NA marker dropped)."""
    return pd.api.types.is_string_dtype(column.dtype) and not column.isna().any()


def read_prediction_tables(
    store: LogitStore, name: str, table: TableLike, *, test: TableLike | None, id_col: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Turn user tables into (oof, test) arrays in the store's row and class order."""
    frame = load_table(table, what=f"entry {name!r} predictions", id_col=id_col)
    where = f"entry {name!r}"
    ids, values = _columns(frame, store.classes, id_col=id_col, where=f"{where} oof table")
    oof_rows = test_rows = None  # rows of `values` for each split (None: all of them)
    test_ids = test_values = None
    if test is None and SPLIT_COL in frame.columns:
        split = frame[SPLIT_COL]
        splits = set(map(str, split.unique())) - {"oof", "test"}
        if splits:
            raise ValidationError(f"{where}: column {SPLIT_COL!r} may only hold 'oof' or 'test'; found {sorted(splits)}.")
        is_test = (split == "test").to_numpy(dtype=bool)
        if is_test.any():
            oof_rows, test_rows = np.flatnonzero(~is_test), np.flatnonzero(is_test)
            test_ids, test_values = ids.select(test_rows), values
            ids = ids.select(oof_rows)
    elif test is not None:
        test_frame = load_table(test, what=f"{where} test predictions", id_col=id_col)
        test_ids, test_values = _columns(test_frame, store.classes, id_col=id_col, where=f"{where} test table")
    oof = _align(ids, values, oof_rows, store.train_ids, where=f"{where} oof table")
    if test_ids is None:
        return oof, None
    if store.test_ids is None:
        raise StoreError(f"{where}: test rows given, but the store has no test ids.")
    assert test_values is not None
    return oof, _align(test_ids, test_values, test_rows, store.test_ids, where=f"{where} test table")


def _columns(frame: pd.DataFrame, classes: list, *, id_col: str, where: str) -> tuple[IdText, np.ndarray]:
    """The ids and the class columns (one float32 array, in the store's class order)."""
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
    selected = [frame[columns[c]] for c in class_cols]
    bad = [str(column.name) for column in selected if not pd.api.types.is_numeric_dtype(column.dtype)
           or pd.api.types.is_bool_dtype(column.dtype)]
    if bad:
        raise ValidationError(f"{where}: class columns must be numeric; {bad[:10]} are not (dtype "
                              f"{frame[columns[bad[0]]].dtype}).")
    # float32 (what the store keeps, at most), row-major: a row gather (np.take) is then one random
    # pass, several times faster than gathering the frame's column-major values
    values = np.empty((len(frame), len(selected)), dtype=np.float32)
    for j, column in enumerate(selected):
        values[:, j] = column.to_numpy()
    return IdText.of(frame[id_col].reset_index(drop=True)), values


def _align(ids: IdText, values: np.ndarray, rows: np.ndarray | None, store_ids: np.ndarray, *,
           where: str) -> np.ndarray:
    """``values[rows]`` (the rows labelled ``ids``) in the store's id order: one gather."""
    match = match_ids(ids, store_ids)
    if match.duplicated:
        raise IdMismatchError(f"{where}: duplicated ids {match.duplicated}.")
    if not match.exact:
        raise IdMismatchError(
            f"{where}: ids do not match the store: {match.n_missing} missing (e.g. {match.missing}), "
            f"{match.n_extra} unknown (e.g. {match.extra})."
        )
    index = match.position if rows is None else rows[match.position]
    return np.take(values, index, axis=0)


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
