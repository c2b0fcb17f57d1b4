"""The teachers' soft targets of every student fold, from their exported fold models.

Student fold ``k`` learns from the teachers' fold-``k`` models only: they were trained on the
rows outside fold ``k``, exactly the student's training rows, and never saw fold ``k``. So the
soft targets carry no label of the rows the student's fold ``k`` is scored on, even when the
extra unlabelled images are near-copies of them (tested with random labels). A fitted stack is
not a teacher here: it was fitted on every row's OOF labels, fold ``k``'s included.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ensemble_kit.data.sources import ImageSource, SubsetSource, positions_of
from ensemble_kit.errors import ArtifactError, ValidationError
from ensemble_kit.metrics import softmax
from ensemble_kit.project.predict import Predictor
from ensemble_kit.store import LogitStore
from ensemble_kit.train.distill import SoftTargets
from ensemble_kit.train.export import EXPORT_DIR

logger = logging.getLogger(__name__)

__all__ = ["distill_targets_by_fold"]


def distill_targets_by_fold(store: LogitStore, teachers: Sequence[str], source: ImageSource, *, temperature: float,
                            unlabeled: ImageSource | None = None, folds: Sequence[int] | None = None,
                            device: str = "auto") -> dict[int, SoftTargets]:
    """Soft targets ``{fold: SoftTargets}`` for a student distilled from ``teachers`` (store entries).

    Each fold ``k``: every teacher's exported fold-``k`` model (its TTA views averaged in logit
    space) predicts the store's training rows outside fold ``k`` and the ``unlabeled`` images;
    the targets are the mean over teachers of ``softmax(logits / temperature)``.

    Parameters
    ----------
    store : LogitStore
    teachers : sequence of str
        Entries trained by ensemble_kit in this store (their fold models are exported under
        ``STORE/runs/<teacher>/fold<k>/model``).
    source : ImageSource
        The training images (ids = the store's train ids).
    temperature : float
        The distillation temperature (the student's ``distill.temperature``).
    unlabeled : ImageSource, optional
        Extra images to distil on (e.g. the test set); no label is read.
    folds : sequence of int, optional
        Default: every fold.
    """
    if not teachers:
        raise ValidationError("distill needs at least one teacher entry.")
    if not temperature > 0:
        raise ValidationError(f"temperature must be positive; got {temperature!r}.")
    fold_list = list(range(store.n_folds)) if folds is None else [int(k) for k in folds]
    train_index = positions_of(store.train_ids, source, what="training source")
    out: dict[int, SoftTargets] = {}
    for k in fold_list:
        folders = {t: [store.workspace.fold_dir(t, k) / EXPORT_DIR] for t in teachers}
        missing = [str(f[0]) for f in folders.values() if not (f[0] / "model.json").is_file()]
        if missing:
            raise ArtifactError(f"No exported fold-{k} model of the teacher(s) at {missing}: train the teachers with "
                                "ensemble_kit first (every fold), so their fold models are exported.")
        rows = np.flatnonzero(store.folds != k)
        # one predictor per teacher (a predictor of one model needs no stack), loaded once per fold
        predictors = [Predictor({t: f}, stack=None, classes=store.classes, device=device) for t, f in folders.items()]
        rows_probs = np.full((len(store.train_ids), store.n_classes), np.nan, dtype=np.float32)
        rows_probs[rows] = _mean_soft(predictors, SubsetSource(source, train_index[rows]), temperature)
        images_probs = None if unlabeled is None else _mean_soft(predictors, unlabeled, temperature)
        out[k] = SoftTargets(rows=rows_probs, images=unlabeled, images_probs=images_probs)
        logger.info("soft targets of fold %d from %s: %d training rows%s", k, list(teachers), len(rows),
                    "" if unlabeled is None else f" + {len(unlabeled)} unlabelled images")
    return out


def _mean_soft(predictors: list[Predictor], images: ImageSource, temperature: float) -> NDArray[np.float32]:
    """The mean over teachers of ``softmax(logits / temperature)`` on ``images``."""
    total = np.zeros((len(images), len(predictors[0].classes)), dtype=np.float64)
    for predictor in predictors:
        (logits,) = predictor.predict_logits(images).values()
        total += softmax(logits.astype(np.float64) / temperature)
    return (total / len(predictors)).astype(np.float32)
