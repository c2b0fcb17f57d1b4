"""Pseudo-labelling (Noisy Student, the AOI recipe): confident ensemble test predictions as labels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ensemble_kit.data.sources import ImageSource, SubsetSource, positions_of
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import softmax
from ensemble_kit.store import LogitStore

logger = logging.getLogger(__name__)


def pseudo_label(store: LogitStore, models: Sequence[str], unlabeled: ImageSource, *, fold: int,
                 threshold: float | None = None, top_fraction: float | None = None,
                 per_class_cap: int | None = None) -> SubsetSource:
    """A labelled source of the test images the teachers' fold-``fold`` models are confident about:
    the extra training images of a student's fold ``fold``.

    Only the teachers' fold-``fold`` models label them: they are the ones that never saw fold
    ``fold``'s rows. A fold-averaged ensemble has: every other fold model trained on them, so where
    an unlabelled image resembles a training image (near-duplicates are common) its pseudo-label
    carries that image's label, and a student validated on fold ``fold`` would be scored on labels
    it was taught (``tests/train/test_pseudo.py`` reproduces it: random labels, student OOF
    accuracy 1.0). The ensemble is the mean of the teachers' fold-``fold`` probabilities. Samples
    are kept when their top probability is at least ``threshold`` or, with ``top_fraction``, when
    they are among that fraction of most confident samples; ``per_class_cap`` keeps at most that
    many (the most confident) per class. :func:`pseudo_labels_by_fold` makes every fold's set;
    pass that dict as ``extra_train`` to :func:`~ensemble_kit.train.train_cv`.

    Parameters
    ----------
    store : LogitStore
        Holds the teachers' per-fold test logits; ``unlabeled.ids`` must be its test ids.
    models : sequence of str
        Teacher entries (with one test prediction per fold model, as the trainer writes them).
    unlabeled : ImageSource
    fold : int
        The student fold these images will train.
    threshold, top_fraction : float
        Exactly one of them.
    per_class_cap : int, optional

    Returns
    -------
    SubsetSource
        With the pseudo labels as ``targets``/``labels`` and attribute ``confidence``.
    """
    if (threshold is None) == (top_fraction is None):
        raise ValidationError("Give exactly one of threshold=... or top_fraction=...")
    if store.test_ids is None:
        raise ValidationError("The store has no test set to pseudo-label.")
    if not list(models):
        raise ValidationError("models must name at least one teacher entry.")
    if not 0 <= int(fold) < store.n_folds:
        raise ValidationError(f"fold {fold} is out of range: the store has folds 0..{store.n_folds - 1}.")
    source_index = positions_of(store.test_ids, unlabeled, what="unlabeled source (the store's test set)")
    probs = np.mean([softmax(_fold_test_logits(store, name, int(fold))) for name in models], axis=0)
    confidence = probs.max(axis=1)
    labels = probs.argmax(axis=1)
    if threshold is not None:
        if not 0 < threshold <= 1:
            raise ValidationError(f"threshold must be in (0, 1]; got {threshold}.")
        keep = confidence >= threshold
    else:
        if not 0 < top_fraction <= 1:  # type: ignore[operator]
            raise ValidationError(f"top_fraction must be in (0, 1]; got {top_fraction}.")
        n_keep = max(1, int(round(top_fraction * len(confidence))))  # type: ignore[operator]
        keep = np.zeros(len(confidence), bool)
        keep[np.argsort(-confidence, kind="stable")[:n_keep]] = True
    if per_class_cap is not None:
        if per_class_cap < 1:
            raise ValidationError(f"per_class_cap must be a positive integer; got {per_class_cap}.")
        for c in range(store.n_classes):
            members = np.flatnonzero(keep & (labels == c))
            if len(members) > per_class_cap:
                drop = members[np.argsort(-confidence[members], kind="stable")[per_class_cap:]]
                keep[drop] = False
    rows = np.flatnonzero(keep)
    source = SubsetSource(unlabeled, source_index[rows], targets=labels[rows])
    source.classes = list(store.classes)
    source.confidence = confidence[rows]
    logger.info("fold %d: pseudo-labelled %d of %d test samples (per class: %s)", fold, len(rows), len(confidence),
                np.bincount(labels[rows], minlength=store.n_classes).tolist())
    return source


def pseudo_labels_by_fold(store: LogitStore, models: Sequence[str], unlabeled: ImageSource, *,
                          folds: Sequence[int] | None = None, **selection: Any) -> dict[int, SubsetSource]:
    """:func:`pseudo_label` for every fold (or ``folds``): ``{fold: extra training images}``, the
    ``extra_train`` of :func:`~ensemble_kit.train.train_cv`. ``selection``: ``threshold``,
    ``top_fraction``, ``per_class_cap``."""
    wanted = range(store.n_folds) if folds is None else folds
    return {int(k): pseudo_label(store, models, unlabeled, fold=int(k), **selection) for k in wanted}


def _fold_test_logits(store: LogitStore, name: str, fold: int) -> np.ndarray:
    per_fold = store.test(name, reduce=None)
    if per_fold.shape[0] != store.n_folds:
        raise ValidationError(
            f"Teacher {name!r} has {per_fold.shape[0]} test prediction(s), not one per fold model ({store.n_folds}): "
            "pseudo-labels for a student fold must come from the teacher's model of that fold, which never saw the "
            "fold's rows. Entries imported with one test prediction cannot teach; train the teacher with "
            "ensemble_kit (or import its per-fold test predictions with put_fold)."
        )
    return per_fold[fold]
