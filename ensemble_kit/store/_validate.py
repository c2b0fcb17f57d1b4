"""Checks applied to every array before it is written, and the probs -> log-probs conversion."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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

__all__ = ["STORE_DTYPES", "IdMatch", "IdText", "check_dtype", "check_kind", "ids_as_text", "match_ids", "prepare_scores"]


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
    if isinstance(ids, (pd.Series, pd.Index)) and pd.api.types.is_string_dtype(ids.dtype) and not ids.isna().any():
        return ids.to_numpy(dtype=str)  # no Python object per id (pandas' Arrow strings convert directly)
    array = np.asarray(ids)
    if array.dtype.kind == "U":
        return array
    return array.astype(str) if array.dtype.kind in "iu" else np.array([str(v) for v in array.tolist()], dtype=str)


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

    Each id is packed into 64-bit words (eight ASCII bytes, or two code points when either side
    has a non-ASCII id), each word is mixed with its position and the mixes are summed into a
    64-bit hash; the hashes are joined in one hash table, and every match is then checked word
    for word: a hash collision (chance, or ids crafted to collide) can never pair two different
    ids; it only sends the join down the exact (about three times slower) text hash join.
    Pandas' Arrow strings that are plain ASCII (the usual ids) are packed by pyarrow, with no
    Python object per id; other ids (pandas' Python-object strings, numpy arrays, lists) never
    touch pyarrow. Numpy's set routines on object arrays and pandas' ``isin`` on Arrow
    strings are quadratic or Python loops. Listing what does not match runs only on a mismatch.
    """
    given_codes = IdText.of(given)
    target_codes = IdText.of(expected)
    found = _join_on_hashes(target_codes, given_codes)
    if found is None:
        found = pd.Index(target_codes.text().astype(object)).get_indexer(given_codes.text().astype(object))
        found = found.astype(np.int64)
    known = found >= 0
    counts = np.bincount(found[known], minlength=target_codes.n)
    if (counts > 1).any():
        return IdMatch(np.empty(0, np.int64), sorted(target_codes.text()[counts > 1][:10].tolist()), [], 0, [], 0)
    n_missing, n_extra = int((counts == 0).sum()), int((~known).sum())
    missing = sorted(target_codes.text()[counts == 0][:5].tolist()) if n_missing else []
    extra = sorted(given_codes.text()[~known][:5].tolist()) if n_extra else []
    position = np.full(target_codes.n, -1, dtype=np.int64)
    position[found[known]] = np.flatnonzero(known)
    return IdMatch(position, [], missing, n_missing, extra, n_extra)


class IdText:
    """Ids as Unicode code points: a (rows x width) code matrix, or an ASCII Arrow string array.

    Code point ``k`` of an id shorter than ``k + 1`` is 0, as in numpy's fixed-width strings
    (which is also why ``"a"`` and ``"a\\0"`` are one id, in the store and here). For matching,
    ids are packed into 64-bit words (:meth:`words`): eight ASCII bytes or two code points each,
    so hashing and comparing take one pass per eight characters, not one per character.
    """

    def __init__(self, *, matrix: NDArray[np.uint32] | None = None, starts: NDArray[np.int64] | None = None,
                 lengths: NDArray[np.int64] | None = None, data: NDArray[np.uint8] | None = None,
                 unicode: NDArray[np.str_] | None = None, arrow: Any = None,
                 words: dict[str, NDArray[np.uint64]] | None = None) -> None:
        self._unicode = unicode
        self._matrix = matrix
        self._arrow = arrow  # the pyarrow string array the Arrow buffers belong to
        self._words: dict[str, NDArray[np.uint64]] = dict(words or {})
        if matrix is not None:
            self.n = len(matrix)
            self.width = matrix.shape[1] if self.n else 0
            if self.width and not matrix[:, -1].any():
                # ids are often far shorter than their dtype (``astype(str)`` of int64 is <U21)
                used = np.flatnonzero(matrix.any(axis=0))
                self.width = int(used[-1]) + 1 if len(used) else 0
            self._ascii: bool | None = None
        elif starts is not None and lengths is not None and data is not None:
            self._starts, self._lengths, self._data = starts, lengths, data
            self.n = len(starts)
            self.width = int(lengths.max()) if self.n else 0
            self._shortest = int(lengths.min()) if self.n else 0
            self._ascii = True
        else:
            raise TypeError("IdText needs a code matrix or Arrow starts, lengths and data")

    @classmethod
    def of(cls, ids: Any) -> IdText:
        if isinstance(ids, IdText):
            return ids
        ascii_arrow = _ascii_arrow_buffers(ids)
        if ascii_arrow is not None:
            offsets, data, arrow = ascii_arrow
            return cls(starts=offsets[:-1], lengths=np.diff(offsets), data=data, arrow=arrow)
        text = np.ascontiguousarray(ids_as_text(ids))
        return cls(matrix=text.view(np.uint32).reshape(len(text), text.dtype.itemsize // 4), unicode=text)

    @property
    def is_ascii(self) -> bool:
        """Whether every code point is below 128 (then an id packs into bytes)."""
        if self._ascii is None:
            assert self._matrix is not None
            self._ascii = bool(self._matrix[:, :self.width].max(initial=0) < 128)
        return self._ascii

    def select(self, rows: NDArray[np.int64]) -> IdText:
        """The ids at ``rows``: a compact code matrix (one gather of every row), or Arrow ids sharing the text."""
        if self._matrix is not None:
            # np.take copies whole rows (fancy indexing a 2-D array is several times slower)
            return IdText(matrix=np.take(self._matrix, rows, axis=0)[:, :max(self.width, 1)])
        # the byte words are cut from the whole Arrow array at once, then gathered like the ids
        words = {"bytes": np.take(self.words("bytes"), rows, axis=0)} if self.n else {}
        return IdText(starts=self._starts[rows], lengths=self._lengths[rows], data=self._data, words=words)

    def text(self) -> NDArray[np.str_]:
        """The ids as a fixed-width unicode array (made on first use)."""
        if self._unicode is None:
            width = max(self.width, 1)
            matrix = np.zeros((self.n, width), dtype=np.uint32)
            for k, column in enumerate(self.codes()):
                matrix[:, k] = column
            self._unicode = matrix.view(f"<U{width}").reshape(self.n)
        return self._unicode

    def codes(self) -> Iterator[NDArray[np.unsignedinteger]]:
        """Code point 0, 1, ... ``width - 1`` of every id, one array each (Arrow: buffers reused)."""
        if self._matrix is not None:
            for k in range(self.width):
                yield self._matrix[:, k]
            return
        cursor = self._starts.copy()
        column = np.empty(self.n, dtype=np.uint8)
        for k in range(self.width):
            if k < self._shortest:
                np.take(self._data, cursor, out=column)
            else:
                column[:] = 0
                live = self._lengths > k
                column[live] = self._data[cursor[live]]
            yield column
            cursor += 1

    def words(self, packing: str) -> NDArray[np.uint64]:
        """Every id as a row of 64-bit words (rows x words, C order), zero beyond its end.

        ``packing="bytes"`` (only when :attr:`is_ascii`) puts eight characters in a word,
        ``"code_points"`` two. Equal ids give equal rows under one packing, whatever the
        representation. Made once per packing.
        """
        if packing not in self._words:
            if packing == "bytes" and not self.is_ascii:
                raise ValueError("ids with non-ASCII characters cannot be packed as bytes")
            if packing == "bytes" and self._matrix is None:
                words = self._arrow_byte_words()
            else:
                matrix = self._matrix if self._matrix is not None else self.text().view(np.uint32).reshape(self.n, -1)
                per_word = 8 if packing == "bytes" else 2
                n_words = -(-self.width // per_word)
                units = np.zeros((self.n, n_words * per_word), dtype=np.uint8 if per_word == 8 else np.uint32)
                units[:, :self.width] = matrix[:, :self.width]
                words = units.view(np.uint64).reshape(self.n, n_words)
            self._words[packing] = words
        return self._words[packing]

    def _arrow_byte_words(self) -> NDArray[np.uint64]:
        """Eight bytes per word straight from Arrow: every id NUL-padded to whole words in C++."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n_bytes = 8 * -(-self.width // 8)
        if n_bytes == 0:
            return np.zeros((self.n, 0), dtype=np.uint64)
        fixed = pc.utf8_rpad(self._arrow, width=n_bytes, padding="\0").cast(pa.binary(n_bytes))
        words = np.frombuffer(fixed.buffers()[1], dtype="<u8")
        return words[fixed.offset * (n_bytes // 8):][:self.n * (n_bytes // 8)].reshape(self.n, n_bytes // 8)

    def hash(self, packing: str, n_words: int) -> NDArray[np.int64]:
        """A 64-bit hash of each id's first ``n_words`` words (zero past its end).

        Every word is keyed by its position and mixed (SplitMix64's finaliser), and the mixes
        are summed, so ids that share most words still get unrelated hashes.
        """
        words = self.words(packing)
        hashed = np.zeros(self.n, dtype=np.uint64)
        mixed = np.empty(self.n, dtype=np.uint64)
        scratch = np.empty(self.n, dtype=np.uint64)
        for j in range(n_words):
            key = _POSITION_KEYS[j % len(_POSITION_KEYS)] ^ np.uint64(j)
            if j < words.shape[1]:
                np.bitwise_xor(words[:, j], key, out=mixed)
                hashed += _mix(mixed, scratch)
            else:  # a word past every id's end is 0 for all of them
                hashed += _mix(np.array([key], dtype=np.uint64), np.empty(1, np.uint64))[0]
        return hashed.view(np.int64)


def _mix(values: NDArray[np.uint64], scratch: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """SplitMix64's finaliser, in place (arithmetic modulo 2**64)."""
    for shift, multiplier in ((30, _MIX_1), (27, _MIX_2)):
        np.right_shift(values, np.uint64(shift), out=scratch)
        values ^= scratch
        values *= multiplier
    np.right_shift(values, np.uint64(31), out=scratch)
    values ^= scratch
    return values


def _ascii_arrow_buffers(ids: Any) -> tuple[NDArray[np.int64], NDArray[np.uint8], Any] | None:
    """(offsets, bytes, array) of a pandas Arrow string column without nulls whose text is all ASCII.

    Only a column already held in Arrow memory qualifies. Every pandas string array has an
    ``__arrow_array__`` (the export protocol), but on one held as Python objects (pandas 3's
    default ``str`` without pyarrow) it imports pyarrow to convert, and the core must not need
    pyarrow: such a column takes the unicode-array route.
    """
    array = ids.array if isinstance(ids, (pd.Series, pd.Index)) else None
    if not isinstance(array, pd.arrays.ArrowExtensionArray) or not pd.api.types.is_string_dtype(ids.dtype):
        return None
    arrow = array.__arrow_array__()
    arrow = arrow.combine_chunks() if hasattr(arrow, "combine_chunks") else arrow
    kind = str(arrow.type)
    if arrow.null_count or kind not in ("string", "large_string"):
        return None
    _, offset_buffer, data_buffer = arrow.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64 if kind == "large_string" else np.int32)
    offsets = offsets[arrow.offset: arrow.offset + len(arrow) + 1].astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    if len(offsets) and data[offsets[0]:offsets[-1]].max(initial=0) >= 128:
        return None  # UTF-8 bytes are not code points: take the unicode-array route
    return offsets, data, arrow


_POSITION_KEYS = np.random.default_rng(0x5EED_1D5).integers(1, 2**63, size=64, dtype=np.uint64)
_MIX_1, _MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _join_on_hashes(target: IdText, given: IdText) -> NDArray[np.int64] | None:
    """Position in ``target`` of each ``given`` id (-1: unknown), or ``None`` if hashes collide."""
    packing = "bytes" if target.is_ascii and given.is_ascii else "code_points"
    given_words, target_words = given.words(packing), target.words(packing)
    n_words = max(given_words.shape[1], target_words.shape[1])
    table = pd.Index(target.hash(packing, n_words))
    if not table.is_unique:  # unique ids, equal hashes: a collision
        return None
    found = table.get_indexer(given.hash(packing, n_words)).astype(np.int64)
    known = found >= 0
    given_matched = given_words if known.all() else given_words[known]
    paired = np.take(target_words, found[known], axis=0)  # one random gather of whole rows
    common = min(given_words.shape[1], target_words.shape[1])
    # every paired id must be equal word for word, and zero wherever only one side has words
    if given_matched[:, common:].any() or paired[:, common:].any():
        return None
    return found if np.array_equal(given_matched[:, :common], paired[:, :common]) else None
