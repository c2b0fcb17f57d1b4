"""Meta-features built from per-model logits, for the wide and the class-wise layouts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import log_softmax, safe_log

FEATURE_KINDS = ("logprobs", "logits", "probs")


def _per_model_values(logits: NDArray, features: str) -> NDArray:
    if features not in FEATURE_KINDS:
        raise ValidationError(f"features must be one of {FEATURE_KINDS}; got {features!r}.")
    if features == "logits":
        return logits
    log_probs = log_softmax(logits)
    return np.exp(log_probs) if features == "probs" else log_probs


def ensemble_log_probs(logits: NDArray) -> NDArray:
    """Log of the plain mean of the models' probabilities, ``(n, C)``."""
    mean = np.exp(log_softmax(logits)).mean(axis=0)
    return safe_log(mean)


@dataclass(frozen=True)
class WideRows:
    """Rows of the wide layout: one per sample."""

    features: NDArray[np.float32]  # (n, M*C + 2M)

    def take(self, samples: NDArray) -> WideRows:
        return WideRows(self.features[samples])


def wide_features(logits: NDArray, features: str) -> NDArray[np.float32]:
    """``(n, M*C + 2M)``: every model's values for every class, plus its entropy and top value."""
    values = _per_model_values(logits, features)
    log_probs = log_softmax(logits)
    entropy = -(np.exp(log_probs) * log_probs).sum(axis=2)  # (M, n)
    top = log_probs.max(axis=2)
    n = logits.shape[1]
    return np.concatenate([values.transpose(1, 0, 2).reshape(n, -1), entropy.T, top.T], axis=1).astype(np.float32)


@dataclass(frozen=True)
class ClasswiseRows:
    """Rows of the class-wise layout: one per (sample, candidate class)."""

    features: NDArray[np.float32]   # (n * K, F)
    candidates: NDArray[np.int64]   # (n, K) class index of each row
    outside_mass: NDArray           # (n,) plain-mean probability outside the candidates
    ensemble_log_probs: NDArray     # (n, C)
    class_column: int               # index of the categorical class-id feature

    def take(self, samples: NDArray) -> ClasswiseRows:
        """The rows of a subset of samples (every feature depends only on its own sample)."""
        n, k = self.candidates.shape
        per_sample = self.features.reshape(n, k, -1)[samples]
        return ClasswiseRows(per_sample.reshape(-1, per_sample.shape[-1]), self.candidates[samples],
                             self.outside_mass[samples], self.ensemble_log_probs[samples], self.class_column)


def classwise_rows(logits: NDArray, features: str, max_candidates: int) -> ClasswiseRows:
    """Features of every (sample, candidate class) pair.

    Candidates are each sample's ``max_candidates`` most probable classes under the plain mean
    of the models (all classes when C is small). Per model: the value for the class, its rank
    within the model's row, and its gap to the best other class; across models: mean and
    spread of the log-probs, the ensemble log-prob and its gap; per sample: ensemble entropy
    and top probability; and the class id (categorical).
    """
    n_models, n, n_classes = logits.shape
    k = min(n_classes, max_candidates)
    ens = ensemble_log_probs(logits)
    if k < n_classes:
        candidates = np.argpartition(-ens, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(n_classes), (n, n_classes))
    candidates = np.ascontiguousarray(candidates, dtype=np.int64)
    rows = np.arange(n)[:, None]

    values = _per_model_values(logits, features)
    log_probs = log_softmax(logits)
    columns = []
    for m in range(n_models):
        lp = log_probs[m]
        order = np.argsort(-lp, axis=1)
        rank = np.empty_like(order)
        rank[rows, order] = np.arange(n_classes)
        top2 = np.take_along_axis(lp, order[:, :2], axis=1)
        chosen = lp[rows, candidates]
        best_other = np.where(candidates == order[:, :1], top2[:, 1:2], top2[:, 0:1])
        columns += [values[m][rows, candidates], rank[rows, candidates].astype(np.float32), chosen - best_other]
    chosen_all = log_probs[:, rows, candidates]  # (M, n, K)
    ens_sorted = np.sort(ens, axis=1)
    ens_chosen = ens[rows, candidates]
    ens_best_other = np.where(ens_chosen >= ens_sorted[:, -1:], ens_sorted[:, -2:-1], ens_sorted[:, -1:])
    ens_p = np.exp(ens)
    entropy = -(ens_p * ens).sum(axis=1, keepdims=True)
    columns += [
        chosen_all.mean(axis=0), chosen_all.std(axis=0), ens_chosen, ens_chosen - ens_best_other,
        np.broadcast_to(entropy, (n, k)), np.broadcast_to(ens_sorted[:, -1:], (n, k)),
        candidates.astype(np.float32),
    ]
    matrix = np.stack([np.asarray(c, dtype=np.float32).reshape(-1) for c in columns], axis=1)
    outside = np.clip(1.0 - ens_p[rows, candidates].sum(axis=1), 0.0, 1.0) if k < n_classes else np.zeros(n)
    return ClasswiseRows(matrix, candidates, outside, ens, class_column=matrix.shape[1] - 1)


def assemble_classwise(rows: ClasswiseRows, margins: NDArray) -> NDArray:
    """Turn per-row margins into per-sample log-probabilities ``(n, C)``.

    Candidate classes share ``1 - outside_mass`` by the softmax of their margins; classes
    outside the candidates keep their plain-mean probability.
    """
    n, k = rows.candidates.shape
    scores = margins.reshape(n, k)
    cand_log_probs = log_softmax(scores) + safe_log(1.0 - rows.outside_mass)[:, None]
    out = rows.ensemble_log_probs.copy()
    np.put_along_axis(out, rows.candidates, cand_log_probs, axis=1)
    return log_softmax(out)
