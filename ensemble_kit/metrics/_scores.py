"""Conversions between logits and probabilities, and input validation shared by metrics."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ensemble_kit.errors import ValidationError

ScoreKind = Literal["logits", "probs"]
SCORE_KINDS: tuple[str, ...] = ("logits", "probs")

# Probabilities are clipped here before taking logs, so a hard 0 becomes a large but finite
# negative logit (log(1e-12) ~ -27.6) instead of -inf.
PROB_EPS = 1e-12


def safe_log(probs: ArrayLike) -> NDArray[np.floating]:
    """``log(p)`` with probabilities clipped to ``[PROB_EPS, 1]``: a hard 0 becomes about -27.6, never -inf.

    Examples
    --------
    >>> safe_log(np.array([0.0, 1.0])).round(1).tolist()
    [-27.6, 0.0]
    """
    p = np.asarray(probs)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    clipped = np.clip(p, PROB_EPS, 1.0)
    if isinstance(clipped, np.ndarray):  # one new array, not two (fresh pages are costly on big inputs)
        return np.log(clipped, out=clipped)
    return np.log(clipped)


def log_softmax(logits: ArrayLike, axis: int = -1, *, out: NDArray[np.floating] | None = None) -> NDArray[np.floating]:
    """Numerically stable log-softmax along ``axis``.

    Large inputs are done a block of rows at a time, so the temporaries stay in cache instead of
    costing a fresh, page-faulted copy of the whole array each (several times faster on the
    (models x rows x classes) stacks of hundreds of classes). ``out`` (same shape and dtype;
    it may be ``logits`` itself, for an in-place transform) receives the result.
    """
    z = np.asarray(logits)
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float64)
    if out is not None and (out.shape != z.shape or out.dtype != z.dtype):
        raise ValueError(f"out must have shape {z.shape} and dtype {z.dtype}; got {out.shape} and {out.dtype}")
    blocked = z.ndim > 0 and z.size > _BLOCK_VALUES and axis in (-1, z.ndim - 1) and (out is None or out.flags.c_contiguous)
    if blocked:
        z = np.ascontiguousarray(z)  # a view in another order: one copy, then cache-sized blocks
    if not blocked:
        result = _log_softmax_block(z, axis)
        if out is None:
            return result
        out[...] = result
        return out
    rows = z.reshape(-1, z.shape[-1])
    target = np.empty_like(rows) if out is None else out.reshape(rows.shape)
    step = max(1, _BLOCK_VALUES // max(z.shape[-1], 1))
    for start in range(0, len(rows), step):
        target[start:start + step] = _log_softmax_block(rows[start:start + step], -1)
    return target.reshape(z.shape)


# values per block of log_softmax: a few MB of temporaries
_BLOCK_VALUES = 1 << 18


def _log_softmax_block(z: NDArray[np.floating], axis: int) -> NDArray[np.floating]:
    shifted = z - z.max(axis=axis, keepdims=True)
    total = np.exp(shifted).sum(axis=axis, keepdims=True)
    shifted -= np.log(total)
    return shifted


def softmax(logits: ArrayLike, axis: int = -1) -> NDArray[np.floating]:
    """Numerically stable softmax along ``axis``."""
    return np.exp(log_softmax(logits, axis=axis))


def check_kind(kind: str) -> str:
    """``kind`` if it is ``"logits"`` or ``"probs"``, else a :class:`ValidationError`."""
    if kind not in SCORE_KINDS:
        raise ValidationError(
            f"kind must be one of {SCORE_KINDS} (declared, never guessed); got {kind!r}."
        )
    return kind


def to_log_probs(scores: ArrayLike, *, kind: ScoreKind) -> NDArray[np.floating]:
    """Turn logits or probabilities into normalised log-probabilities."""
    check_kind(kind)
    if kind == "logits":
        return log_softmax(scores)
    p = np.asarray(scores, dtype=np.float64)
    return safe_log(p / p.sum(axis=-1, keepdims=True))


def to_probs(scores: ArrayLike, *, kind: ScoreKind) -> NDArray[np.floating]:
    """Turn logits or probabilities into probabilities whose rows sum to 1."""
    check_kind(kind)
    if kind == "logits":
        return softmax(scores)
    p = np.asarray(scores, dtype=np.float64)
    return p / p.sum(axis=-1, keepdims=True)


def check_targets(y: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.int64], NDArray]:
    """Validate ``y`` (class indices) against a ``(n_samples, n_classes)`` score matrix."""
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValidationError(
            f"scores must be a 2-D (n_samples, n_classes) array; got shape {s.shape}."
        )
    yy = np.asarray(y)
    if yy.ndim != 1 or yy.shape[0] != s.shape[0]:
        raise ValidationError(
            f"y must be 1-D with one label per row of scores ({s.shape[0]} rows); "
            f"got shape {yy.shape}."
        )
    if not np.issubdtype(yy.dtype, np.integer):
        raise ValidationError(
            f"y must hold integer class indices in [0, {s.shape[1]}); got dtype {yy.dtype}. "
            "Map labels to indices first (LogitStore.y already holds indices)."
        )
    bad = (yy < 0) | (yy >= s.shape[1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValidationError(
            f"y[{i}] = {int(yy[i])} is not a class index in [0, {s.shape[1]}) "
            f"({int(bad.sum())} such labels)."
        )
    if not np.isfinite(s).all():
        i = int(np.flatnonzero(~np.isfinite(s).all(axis=1))[0])
        raise ValidationError(f"scores row {i} holds NaN or inf.")
    return yy.astype(np.int64, copy=False), s
