"""Competition submission files: from a saved stack's test predictions, or from new images.

One function, :func:`build_submission`, shapes predictions into the file a competition wants:
the configured format (``labels``: id + class name; ``probs``: id + one column per class), or
the exact layout of a ``sample_submission.csv`` (its row order, id column name and column
order; probabilities when its other columns are the classes, labels when it has one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ensemble_kit.errors import ValidationError
from ensemble_kit.project.results import StackResult
from ensemble_kit.store import LogitStore
from ensemble_kit.store._tables import load_table
from ensemble_kit.store._validate import match_ids

__all__ = ["build_submission", "submission_frame", "write_submission"]

SubmissionFormat = Literal["auto", "labels", "probs"]


def build_submission(ids: ArrayLike, proba: NDArray, labels: NDArray, classes: list[Any], *,
                     format: SubmissionFormat = "auto", metric: str = "log_loss", id_col: str = "id",
                     label_col: str = "label", sample_submission: str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
    """A submission table of ``proba`` (n, C) and decided ``labels`` (n,) for ``ids``.

    With ``sample_submission`` its layout wins: the id column is its first column, rows follow
    its order (every id must be predicted, and no other; a few of the differences are listed),
    and its other columns decide the format (the class names, in any order: probabilities in
    that order; one column: class names under that header). ``format="auto"``: probabilities
    when ``metric`` is log loss, labels otherwise.
    """
    ids = np.asarray(ids)
    if format not in ("auto", "labels", "probs"):
        raise ValidationError(f"format must be 'auto', 'labels' or 'probs'; got {format!r}.")
    names = [str(c) for c in classes]
    if sample_submission is not None:
        sample = load_table(sample_submission, what="sample submission", id_col=None)
        if sample.shape[1] < 2:
            raise ValidationError(f"The sample submission has columns {list(sample.columns)}; expected an id column and "
                                  "one label column or one column per class.")
        id_col = str(sample.columns[0])
        sample = load_table(sample_submission, what="sample submission", id_col=id_col)
        others = [str(c) for c in sample.columns[1:]]
        if sorted(others) == sorted(names):
            format, order = "probs", others
        elif len(others) == 1:
            format, label_col, order = "labels", others[0], names
        else:
            raise ValidationError(f"The sample submission's columns {others[:10]} are neither the classes {names[:10]} "
                                  "nor one label column.")
        match = match_ids(ids, sample[id_col].to_numpy())
        if match.duplicated or not match.exact:
            raise ValidationError(
                f"The sample submission's ids differ from the predicted ones: {match.n_missing} of its ids were not "
                f"predicted (e.g. {match.missing}), {match.n_extra} predicted ids are not in it (e.g. {match.extra})"
                + (f"; duplicated: {match.duplicated}" if match.duplicated else "") + ".")
        rows = match.position
        frame = pd.DataFrame({id_col: sample[id_col].to_numpy()})
    else:
        if format == "auto":
            format = "probs" if metric == "log_loss" else "labels"
        rows, order = np.arange(len(ids)), names
        frame = pd.DataFrame({id_col: ids})
    if format == "labels":
        frame[label_col] = np.asarray(classes, dtype=object)[np.asarray(labels)[rows]]
        return frame
    if id_col in order:
        raise ValidationError(f"id column {id_col!r} collides with a class named {id_col!r}; pass another id_col.")
    columns = [names.index(c) for c in order]
    return pd.concat([frame, pd.DataFrame(np.asarray(proba)[rows][:, columns], columns=order)], axis=1)


def submission_frame(store: LogitStore, stack: StackResult, *, format: SubmissionFormat = "auto", id_col: str = "id",
                     label_col: str = "label", sample_submission: str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
    """The test predictions of ``stack`` as a submission table (see :func:`build_submission`)."""
    if store.test_ids is None or stack.test_proba is None or stack.test_labels is None:
        raise ValidationError(f"Store {str(store.path)!r} has no test set, so there is nothing to submit.")
    return build_submission(store.test_ids, stack.test_proba, stack.test_labels, list(store.classes), format=format,
                            metric=stack.metric, id_col=id_col, label_col=label_col, sample_submission=sample_submission)


def write_submission(store: LogitStore, stack: StackResult, out: str | Path, **options: Any) -> Path:
    """Write :func:`submission_frame` as CSV to ``out`` (parent folders created)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    submission_frame(store, stack, **options).to_csv(out, index=False)
    return out
