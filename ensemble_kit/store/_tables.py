"""CSV/Parquet import and export of store entries."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import pandas as pd

from ensemble_kit._optional import import_optional
from ensemble_kit.errors import FoldMismatchError, IdMismatchError, StoreError, ValidationError
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
# rows (and fold pairings) a message names; the count says how many rows there are in all
_SHOWN_ROWS = 5
_SHOWN_PAIRS = 10
# values a table cell holds that are not one id / split / fold (a Parquet list or struct column)
_NOT_SCALAR = (list, tuple, dict, set, frozenset, np.ndarray, pd.Series)


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
    """Turn user tables into (oof, test) arrays in the store's row and class order.

    A ``fold`` column in the OOF rows (the layout :meth:`LogitStore.export` writes) is checked
    against the store's folds: it must describe the same split, under any labels (folds 1..5 for
    the store's 0..4, or in another order, are the same split); a row whose fold disagrees is a
    :class:`~ensemble_kit.errors.FoldMismatchError`, since OOF predictions made on other folds
    leak into the stack's nested cross-validation. A table without a ``fold`` column has nothing
    to check and is taken as made on the store's folds. The ``fold`` of test rows (``-1`` in an
    export) and of a separate ``test`` table is not read, nor a ``fold`` column that is a class
    or the id column.

    Raises
    ------
    ValidationError
        The id, ``split`` or ``fold`` column holds lists or other non-scalar values (a Parquet
        list column), or a class column is not numeric.
    IdMismatchError
        Ids missing, unknown or duplicated, or no id or class column.
    FoldMismatchError
        The ``fold`` column describes another split than the store's, or has no value in an
        OOF row.
    """
    frame = load_table(table, what=f"entry {name!r} predictions", id_col=id_col)
    where = f"entry {name!r}"
    ids, values = _columns(frame, store.classes, id_col=id_col, where=f"{where} oof table")
    oof_rows = test_rows = None  # rows of `values` for each split (None: all of them)
    test_ids = test_values = None
    if test is None and SPLIT_COL in frame.columns:
        split = frame[SPLIT_COL]
        _check_scalars(split, where=f"{where} oof table")
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
    oof_index = _align(ids, oof_rows, store.train_ids, where=f"{where} oof table")
    if FOLD_COL in frame.columns and FOLD_COL != id_col and FOLD_COL not in {str(c) for c in store.classes}:
        _check_fold_column(frame[FOLD_COL], oof_index, store, where=f"{where} oof table")
    oof = np.take(values, oof_index, axis=0)
    if test_ids is None:
        return oof, None
    if store.test_ids is None:
        raise StoreError(f"{where}: test rows given, but the store has no test ids.")
    assert test_values is not None
    return oof, np.take(test_values, _align(test_ids, test_rows, store.test_ids, where=f"{where} test table"), axis=0)


def _check_scalars(column: pd.Series, *, where: str) -> None:
    """Refuse a column whose cells are lists, arrays or mappings (a Parquet list or struct column):
    ``str()`` of one is no id, split or fold, and numpy cannot even turn the column into text."""
    dtype = column.dtype
    if isinstance(dtype, pd.ArrowDtype):
        import pyarrow as pa

        nested = pa.types.is_nested(dtype.pyarrow_dtype)
    else:
        # one C pass answers for the usual columns (text, numbers); only the others are walked
        nested = dtype == object and pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty", "bytes",
                                                                                            "integer", "floating")
    if not nested:
        return
    bad = np.fromiter((isinstance(v, _NOT_SCALAR) for v in column.tolist()), dtype=bool, count=len(column))
    if not bad.any():
        return
    row = int(np.argmax(bad))
    value = column.iloc[row]
    shown = repr(value.tolist() if isinstance(value, (np.ndarray, pd.Series)) else value)
    name = str(column.name)
    fix = f"Write one value per row (e.g. df[{name!r}] = df[{name!r}].str[0])"
    if name not in (SPLIT_COL, FOLD_COL):
        fix += ", or pass id_col=... naming the column that holds one id per row"
    raise ValidationError(
        f"{where}: column {name!r} must hold one value per row (text or an integer); row {row} (counting from 0) "
        f"holds {shown[:80]}, and {int(bad.sum())} row(s) in all hold lists or other "
        f"collections (a Parquet list or struct column). {fix}."
    )


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
    _check_scalars(frame[id_col], where=where)
    # float32 (what the store keeps, at most), row-major: a row gather (np.take) is then one random
    # pass, several times faster than gathering the frame's column-major values
    values = np.empty((len(frame), len(selected)), dtype=np.float32)
    for j, column in enumerate(selected):
        values[:, j] = column.to_numpy()
    return IdText.of(frame[id_col].reset_index(drop=True)), values


def _align(ids: IdText, rows: np.ndarray | None, store_ids: np.ndarray, *, where: str) -> np.ndarray:
    """The table row (among ``rows``, or all rows) labelled with each of ``store_ids``, in the store's order."""
    match = match_ids(ids, store_ids)
    if match.duplicated:
        raise IdMismatchError(f"{where}: duplicated ids {match.duplicated}.")
    if not match.exact:
        raise IdMismatchError(
            f"{where}: ids do not match the store: {match.n_missing} missing (e.g. {match.missing}), "
            f"{match.n_extra} unknown (e.g. {match.extra})."
        )
    return match.position if rows is None else rows[match.position]


def _check_fold_column(column: pd.Series, table_rows: np.ndarray, store: LogitStore, *, where: str) -> None:
    """Refuse a ``fold`` column that splits the OOF rows otherwise than the store's folds.

    ``table_rows[i]`` is the table row of the store's training sample ``i``. The labels are free
    (a relabelling is the same split): each store fold is paired with the table fold it shares
    most rows with (largest overlaps first, each fold paired once), and a row whose two folds are
    not a pair disagrees.
    """
    _check_scalars(column, where=where)
    given = column.to_numpy()[table_rows]
    codes, labels = pd.factorize(given, use_na_sentinel=True)
    codes = codes.astype(np.int64)
    blank = np.flatnonzero(codes < 0)
    if len(blank):
        raise FoldMismatchError(
            f"{where}: column {FOLD_COL!r} has no value in {len(blank)} OOF row(s) ({_rows(blank, table_rows, store)}; "
            "rows count from 0). "
            "Give every OOF row the fold it was predicted in (the store's folds: store.folds, or the 'fold' column "
            "`ensemble-kit export` writes)."
        )
    store_folds = np.asarray(store.folds, dtype=np.int64)
    pair = store_folds * len(labels) + codes
    pairs, counts = np.unique(pair, return_counts=True)
    agreed: dict[int, int] = {}  # table fold code -> the store fold paired with it
    for k in np.argsort(-counts, kind="stable"):
        fold, code = divmod(int(pairs[k]), len(labels))
        if code not in agreed and fold not in set(agreed.values()):
            agreed[code] = fold
    paired = np.array([agreed.get(code, -1) for code in range(len(labels))], dtype=np.int64)
    wrong = np.flatnonzero(paired[codes] != store_folds)
    if not len(wrong):
        return
    shown = _rows(wrong, table_rows, store, detail=lambda i: f": fold {_plain(labels[codes[i]])!r} here, "
                                                          f"fold {store.fold_labels[store_folds[i]]!r} in the store")
    pairing = ", ".join(f"{_plain(labels[code])!r} = {repr(store.fold_labels[fold]) if fold >= 0 else 'none'}"
                        for code, fold in enumerate(paired[:_SHOWN_PAIRS]))
    pairing += ", ..." if len(labels) > _SHOWN_PAIRS else ""
    raise FoldMismatchError(
        f"{where}: column {FOLD_COL!r} describes another split than the store's folds: {len(wrong)} of {len(given)} "
        f"OOF rows disagree ({shown}; rows count from 0). Each fold here was matched with the store fold it shares "
        f"the most rows with (here = store: {pairing}); the table has {len(labels)} fold(s), the store "
        f"{store.n_folds}. OOF predictions made on other folds leak into the stack's cross-validation: make them on "
        "the store's folds (store.folds, or the 'fold' column `ensemble-kit export` writes). The same folds under "
        "other labels (1..K for 0..K-1) are accepted."
    )


def _rows(picked: np.ndarray, table_rows: np.ndarray, store: LogitStore, *,
          detail: Callable[[int], str] = lambda i: "") -> str:
    """The first table rows (with their ids and ``detail(i)``) of the store rows ``picked``, in the
    table's order, and how many more there are: a message names a few, never thousands."""
    picked = picked[np.argsort(table_rows[picked], kind="stable")]
    named = "; ".join(f"row {int(table_rows[i])} (id {str(store.train_ids[i])!r}){detail(int(i))}"
                      for i in picked[:_SHOWN_ROWS])
    return named + (f"; and {len(picked) - _SHOWN_ROWS} more" if len(picked) > _SHOWN_ROWS else "")


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (``1``, not ``np.int64(1)``, in a message)."""
    return value.item() if isinstance(value, np.generic) else value


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
