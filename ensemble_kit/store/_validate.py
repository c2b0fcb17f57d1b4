"""Checks applied to every array before it is written, and the probs -> log-probs conversion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ensemble_kit.errors import InvalidValuesError, ShapeMismatchError, ValidationError
from ensemble_kit.metrics import check_kind, safe_log
from ensemble_kit.store._manifest import STORE_DTYPES

PROB_RANGE_TOL = 1e-6
PROB_SUM_TOL = 1e-3
# Rows checked first when deciding whether "logits" are in fact probabilities: real logits leave
# [0, 1] (or miss a row sum of 1) within a few rows, so the full scan runs only for suspects.
_PROBE_ROWS = 1024

__all__ = ["STORE_DTYPES", "IdMatch", "check_dtype", "check_kind", "ids_as_text", "match_ids", "prepare_scores"]


def check_dtype(dtype: Any) -> str:
    name = np.dtype(dtype).name if dtype is not None else "float32"
    if name not in STORE_DTYPES:
        raise ValidationError(f"Store dtype must be one of {STORE_DTYPES}; got {dtype!r}.")
    return name


def prepare_scores(
    values: Any,
    *,
    where: str,
    shape: tuple[int, ...],
    axes: Sequence[str],
    kind: str,
    dtype: str,
    row_ids: NDArray | None = None,
) -> NDArray:
    """Validate one prediction array and return it as stored (logits in ``dtype``).

    ``where`` names the thing being written (e.g. ``"entry 'cnn' oof"``) and ``axes`` names each
    dimension (e.g. ``("rows", "classes")``) so messages say exactly what is wrong.
    ``row_ids`` maps the second-to-last axis to sample ids for messages about bad rows.
    """
    check_kind(kind)
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise ShapeMismatchError(f"{where}: cannot be converted to an array ({exc}).") from exc
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ValidationError(f"{where}: expected a numeric array; got dtype {array.dtype}.")
    if array.ndim != len(shape):
        raise ShapeMismatchError(
            f"{where}: expected {len(shape)}-D shape {shape} ({' x '.join(axes)}); "
            f"got {array.ndim}-D shape {array.shape}."
        )
    for axis, (got, want, axis_name) in enumerate(zip(array.shape, shape, axes)):
        if got != want:
            raise ShapeMismatchError(
                f"{where}: expected {want} {axis_name} (axis {axis}) for shape {shape}; "
                f"got {got} (shape {array.shape})."
            )

    # Any NaN/inf makes the sum non-finite, and a finite float32 sum of logits cannot overflow
    # in practice: one fast reduction clears the common case; the exact scan runs only after.
    if not np.isfinite(array.sum(dtype=np.float64 if array.dtype == np.float64 else np.float32)) \
            and not np.isfinite(array).all():
        bad_rows = ~np.isfinite(array).reshape(-1, array.shape[-1]).all(axis=1)
        raise InvalidValuesError(
            f"{where}: holds NaN or inf in {int(bad_rows.sum())} row(s), first at "
            f"{_row_label(int(np.argmax(bad_rows)), array.shape, row_ids)}. Every value must be "
            "finite."
        )

    if kind == "probs":
        array = _probs_to_log_probs(array, where=where, row_ids=row_ids)
    elif _looks_like_probabilities(array):
        raise InvalidValuesError(
            f"{where}: kind='logits' but every row is in [0, 1] and sums to 1: these are probabilities. Pass "
            "kind='probs' (they are stored as log-probabilities), or pass the model's raw logits."
        )
    with np.errstate(over="ignore"):  # overflow is reported below, with the entry's name
        stored = np.ascontiguousarray(array, dtype=dtype)
    if dtype != array.dtype and not np.isfinite(stored).all():
        raise InvalidValuesError(
            f"{where}: values overflow {dtype} (largest magnitude {float(np.abs(array).max()):g}). "
            "Store float32, or subtract each row's max logit first."
        )
    return stored


def _is_probability_block(flat: NDArray) -> bool:
    if flat.size == 0 or flat.min() < -PROB_RANGE_TOL or flat.max() > 1 + PROB_RANGE_TOL:
        return False
    return bool(np.all(np.abs(flat.sum(axis=1, dtype=np.float64) - 1.0) <= PROB_SUM_TOL))


def _looks_like_probabilities(values: NDArray) -> bool:
    """Every row in [0, 1] summing to 1: not a plausible logit matrix."""
    flat = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, -1)
    return _is_probability_block(flat[:_PROBE_ROWS]) and _is_probability_block(flat)


def _probs_to_log_probs(p: NDArray, *, where: str, row_ids: NDArray | None) -> NDArray:
    flat = p.reshape(-1, p.shape[-1])
    # two reductions clear the common case; the mask that locates a bad value is built only on failure
    if flat.size and (flat.min() < -PROB_RANGE_TOL or flat.max() > 1 + PROB_RANGE_TOL):
        outside = (flat < -PROB_RANGE_TOL) | (flat > 1 + PROB_RANGE_TOL)
        row, col = (int(i) for i in np.argwhere(outside)[0])
        raise InvalidValuesError(
            f"{where}: kind='probs' but value {float(flat[row, col]):g} at "
            f"{_row_label(row, p.shape, row_ids)}, class column {col} is outside [0, 1]. "
            "Pass kind='logits' if these are logits."
        )
    sums = flat.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0) > PROB_SUM_TOL
    if off.any():
        row = int(np.argmax(off))
        raise InvalidValuesError(
            f"{where}: kind='probs' but {int(off.sum())} row(s) do not sum to 1 "
            f"(tolerance {PROB_SUM_TOL}); {_row_label(row, p.shape, row_ids)} sums to "
            f"{sums[row]:.6g}. Normalise the rows, or pass kind='logits'."
        )
    q = p if np.issubdtype(p.dtype, np.floating) else p.astype(np.float64)
    return safe_log(q)


def _row_label(flat_row: int, shape: tuple[int, ...], row_ids: NDArray | None) -> str:
    n_rows = shape[-2]
    row = flat_row % n_rows
    label = f"row {row}"
    if len(shape) == 3:
        label = f"fold {flat_row // n_rows}, {label}"
    if row_ids is not None:
        label += f" (id {row_ids[row].item()!r})"
    return label


def ids_as_text(ids: Any) -> NDArray[np.str_]:
    """Sample ids as an array of ``str``: how ids from tables and callers are matched to the store's."""
    array = np.asarray(ids)
    return array.astype(str) if array.dtype.kind in "iuU" else np.array([str(v) for v in array.tolist()], dtype=str)


@dataclass(frozen=True)
class IdMatch:
    """Where each expected id sits among the given ones, and what does not match."""

    position: NDArray[np.int64]  # index into the given ids of every expected id (-1: missing)
    duplicated: list[str]        # given ids that occur more than once (then position is empty)
    missing: list[str]           # expected ids not given (up to 5, sorted)
    n_missing: int
    extra: list[str]             # given ids not expected (up to 5, sorted)
    n_extra: int

    @property
    def exact(self) -> bool:
        return not (self.duplicated or self.n_missing or self.n_extra)


def match_ids(given: Any, expected: Any) -> IdMatch:
    """Match ``given`` ids to the (unique) ``expected`` ones as text, linear in the rows.

    Ids are hashed to 64 bits (pandas' vectorised ``hash_array``), joined on the integers, and
    every match is then checked on the text itself, so a hash collision can never pair two
    different ids (it only sends the join down the plain text hash join). Numpy's set routines on
    object arrays and pandas' ``isin`` on Arrow strings are quadratic or Python loops; a text
    hash join of a million shuffled ids is about twice as slow as this. Listing what does not
    match runs only on a mismatch.
    """
    given_text = _text_objects(given)
    target_text = _text_objects(expected)
    found = _join_on_hashes(target_text, given_text)
    if found is None:  # a 64-bit collision among the ids: fall back to hashing the text
        found = pd.Index(target_text, dtype=object).get_indexer(given_text).astype(np.int64)
    known = found >= 0
    counts = np.bincount(found[known], minlength=len(target_text))
    if (counts > 1).any():
        return IdMatch(np.empty(0, np.int64), sorted(target_text[counts > 1][:10].tolist()), [], 0, [], 0)
    n_missing, n_extra = int((counts == 0).sum()), int((~known).sum())
    missing = sorted(target_text[counts == 0][:5].tolist()) if n_missing else []
    extra = sorted(given_text[~known][:5].tolist()) if n_extra else []
    position = np.full(len(target_text), -1, dtype=np.int64)
    position[found[known]] = np.flatnonzero(known)
    return IdMatch(position, [], missing, n_missing, extra, n_extra)


def _text_objects(ids: Any) -> NDArray[np.object_]:
    """Ids as an object array of ``str`` (what pandas hashes fastest)."""
    if isinstance(ids, (pd.Series, pd.Index)) and pd.api.types.is_string_dtype(ids.dtype) and not ids.isna().any():
        return ids.to_numpy(dtype=object)
    return ids_as_text(ids).astype(object)


def _join_on_hashes(target: NDArray[np.object_], given: NDArray[np.object_]) -> NDArray[np.int64] | None:
    """Position in ``target`` of each ``given`` id (-1: unknown), or ``None`` if hashes collide."""
    from pandas.util import hash_array

    target_hash = pd.Index(hash_array(target, categorize=False).view(np.int64))
    if not target_hash.is_unique:
        return None
    found = target_hash.get_indexer(hash_array(given, categorize=False).view(np.int64)).astype(np.int64)
    known = found >= 0
    matched = given if known.all() else given[known]
    if not np.array_equal(matched, target[found[known]]):
        return None
    return found
