"""Competition submission files from a saved stack."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from ensemble_kit.errors import ValidationError
from ensemble_kit.project.results import StackResult
from ensemble_kit.store import LogitStore


def submission_frame(store: LogitStore, stack: StackResult, *, format: Literal["auto", "labels", "probs"] = "auto",
                     id_col: str = "id", label_col: str = "label") -> pd.DataFrame:
    """The test predictions of ``stack`` as a submission table, rows in the store's test-id order.

    ``labels``: ``id_col`` + ``label_col`` holding class values, decided with the stack's class
    thresholds or rules when it has them. ``probs``: ``id_col`` + one column per class (named by
    the class values) holding probabilities, as log-loss competitions expect. ``auto``: probs
    when the stack was fitted for log loss, labels otherwise.
    """
    if format not in ("auto", "labels", "probs"):
        raise ValidationError(f"format must be 'auto', 'labels' or 'probs'; got {format!r}.")
    if store.test_ids is None or stack.test_proba is None or stack.test_labels is None:
        raise ValidationError(f"Store {str(store.path)!r} has no test set, so there is nothing to submit.")
    if format == "auto":
        format = "probs" if stack.metric == "log_loss" else "labels"
    classes = list(store.classes)
    frame = pd.DataFrame({id_col: store.test_ids})
    if format == "labels":
        frame[label_col] = [classes[k] for k in stack.test_labels]
        return frame
    names = [str(c) for c in classes]
    if id_col in names:
        raise ValidationError(f"id column {id_col!r} collides with a class named {id_col!r}; pass another id_col.")
    probs = pd.DataFrame(stack.test_proba, columns=names)
    return pd.concat([frame, probs], axis=1)


def write_submission(store: LogitStore, stack: StackResult, out: str | Path, **options: str) -> Path:
    """Write :func:`submission_frame` as CSV to ``out`` (parent folders created)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    submission_frame(store, stack, **options).to_csv(out, index=False)
    return out
