"""Pseudo-labelling (Noisy Student, the AOI recipe): confident ensemble test predictions as labels."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ensemble_kit.data.sources import ImageSource, SubsetSource, positions_of
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import softmax
from ensemble_kit.store import LogitStore

logger = logging.getLogger(__name__)


def pseudo_label(store: LogitStore, models: Sequence[str], unlabeled: ImageSource, *, threshold: float | None = None,
                 top_fraction: float | None = None, per_class_cap: int | None = None) -> SubsetSource:
    """A labelled source of the test images the ensemble of ``models`` is confident about.

    The ensemble is the mean of the models' fold-averaged test probabilities. Samples are kept
    when their top probability is at least ``threshold`` or, with ``top_fraction``, when they
    are among that fraction of most confident samples; ``per_class_cap`` keeps at most that many
    (the most confident) per class. Pass the result as ``extra_train`` to
    :func:`~ensemble_kit.train.train_cv`: it is added to every fold's training set only.

    Parameters
    ----------
    store : LogitStore
        Holds the teachers' test logits; ``unlabeled.ids`` must be its test ids.
    models : sequence of str
        Teacher entries.
    unlabeled : ImageSource
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
    source_index = positions_of(store.test_ids, unlabeled, what="unlabeled source (the store's test set)")
    probs = softmax(store.test(list(models))).mean(axis=0)
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
    logger.info("pseudo-labelled %d of %d test samples (per class: %s)", len(rows), len(confidence),
                np.bincount(labels[rows], minlength=store.n_classes).tolist())
    return source
