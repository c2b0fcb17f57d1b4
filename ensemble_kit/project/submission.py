"""Competition submission files: from a saved stack's test predictions, or from new images.

One function, :func:`build_submission`, shapes predictions into the file a competition wants:
the configured format (``labels``: id + class name; ``probs``: id + one column per class), or
the exact layout of a ``sample_submission.csv`` (its row order, id column name and column
order; probabilities when its other columns are the classes, labels when it has one).
:func:`prediction_table` is the inspection table ``predict`` writes by default: id, the decided
label, its probability (``confidence``) and one probability column per class.

Ids of image files are their names without extension (``img0017``); a sample submission that
writes them with the extension (``img0017.jpg``) is matched all the same, and keeps its ids.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ensemble_kit.errors import DestinationError, ValidationError
from ensemble_kit.project.results import StackResult
from ensemble_kit.store import LogitStore
from ensemble_kit.store._tables import load_table
from ensemble_kit.store._validate import match_ids

__all__ = ["SampleLayout", "build_submission", "check_table_classes", "image_extension", "match_sample_ids",
           "prediction_table", "sample_layout", "submission_frame", "write_submission"]

SubmissionFormat = Literal["auto", "labels", "probs"]
#: The fixed columns of :func:`prediction_table`, before one probability column per class.
TABLE_COLUMNS = ("id", "label", "confidence")


def build_submission(ids: ArrayLike, proba: NDArray, labels: NDArray, classes: list[Any], *,
                     format: SubmissionFormat = "auto", metric: str = "log_loss", id_col: str = "id",
                     label_col: str = "label", sample_submission: str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
    """A submission table of ``proba`` (n, C) and decided ``labels`` (n,) for ``ids``.

    With ``sample_submission`` its layout wins: the id column is its first column, rows follow
    its order (every id must be predicted, and no other; a few of the differences are listed;
    ids that differ only by an image extension match, see :func:`match_sample_ids`), and its
    other columns decide the format (the class names, in any order: probabilities in
    that order; one column: class names under that header). ``format="auto"``: probabilities
    when ``metric`` is log loss, labels otherwise.
    """
    ids = np.asarray(ids)
    if format not in ("auto", "labels", "probs"):
        raise ValidationError(f"format must be 'auto', 'labels' or 'probs'; got {format!r}.")
    names = [str(c) for c in classes]
    if sample_submission is not None:
        layout = sample_layout(sample_submission, classes)
        sample, id_col, format = layout.frame, layout.id_col, layout.format
        order = layout.columns if format == "probs" else names
        label_col = layout.label_col or label_col
        rows = match_sample_ids(ids, sample[id_col].to_numpy())
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


@dataclass(frozen=True)
class SampleLayout:
    """What a sample submission asks for: its id column, and probabilities or one label column."""

    frame: pd.DataFrame
    id_col: str
    format: Literal["labels", "probs"]
    columns: list[str]        # the columns after the id column
    label_col: str | None     # the label column (``format == "labels"``)

    @property
    def ids(self) -> NDArray:
        return self.frame[self.id_col].to_numpy()


def sample_layout(sample_submission: str | Path | pd.DataFrame, classes: list[Any]) -> SampleLayout:
    """Read a sample submission: its first column holds the ids (kept as the text written); its
    other columns are the classes (in any order: probabilities) or one label column."""
    names = [str(c) for c in classes]
    sample = load_table(sample_submission, what="sample submission", id_col=None)
    if sample.shape[1] < 2:
        raise ValidationError(f"The sample submission has columns {list(sample.columns)}; expected an id column and "
                              "one label column or one column per class.")
    id_col = str(sample.columns[0])
    sample = load_table(sample_submission, what="sample submission", id_col=id_col)
    others = [str(c) for c in sample.columns[1:]]
    if sorted(others) == sorted(names):
        return SampleLayout(sample, id_col, "probs", others, None)
    if len(others) == 1:
        return SampleLayout(sample, id_col, "labels", others, others[0])
    raise ValidationError(f"The sample submission's columns {others[:10]} are neither the classes {names[:10]} "
                          "nor one label column.")


@functools.lru_cache(maxsize=1)
def _image_extension() -> re.Pattern[str]:
    """A trailing image extension (any case), as the folder sources recognise them."""
    from ensemble_kit.data.sources import IMAGE_EXTENSIONS

    return re.compile("(" + "|".join(re.escape(e) for e in IMAGE_EXTENSIONS) + ")$", flags=re.IGNORECASE)


def _split_extension(ids: NDArray) -> tuple[pd.Series, pd.Series]:
    """Each id without a trailing image extension, and that extension (``""`` when none)."""
    text = pd.Series(ids.astype(str), dtype=object)
    ext = text.str.extract(_image_extension(), expand=False).fillna("")
    key = pd.Series([t[: len(t) - len(e)] if e else t for t, e in zip(text, ext)], dtype=object)
    return key, ext


def image_extension(value: Any) -> str:
    """The image extension an id ends with, as written (``"img0017.JPG"`` -> ``".JPG"``), or ``""``."""
    found = _image_extension().search(str(value))
    return found.group(1) if found else ""


def match_sample_ids(predicted: ArrayLike, sample_ids: ArrayLike) -> NDArray[np.int64]:
    """Row of ``predicted`` for each id of a sample submission, in the sample's order.

    Ids are compared as text. When they differ, an id with an image extension matches the same
    id without one on the other side (``img0017.jpg`` in the sample and ``img0017``, the id a
    folder of images gives the file ``img0017.jpg``), so ids follow the sample submission's style;
    two different extensions (``img0017.png`` vs ``img0017.jpg``) never match. Anything else is
    a :class:`~ensemble_kit.errors.ValidationError` listing a few ids of each side, and saying
    when the ids differ only by their extension.
    """
    predicted, sample_ids = np.asarray(predicted), np.asarray(sample_ids)
    match = match_ids(predicted, sample_ids)
    if match.exact:
        return match.position
    pred_key, pred_ext = _split_extension(predicted)
    sample_key, sample_ext = _split_extension(sample_ids)
    if (pred_ext.str.len().any() or sample_ext.str.len().any()) and not pred_key.duplicated().any() \
            and not sample_key.duplicated().any():
        keyed = match_ids(pred_key.to_numpy(), sample_key.to_numpy())
        if keyed.exact:
            mine, theirs = pred_ext.to_numpy()[keyed.position], sample_ext.to_numpy()
            clash = (mine != "") & (theirs != "") & (mine != theirs)
            if not clash.any():
                return keyed.position
            conflicts = [(str(sample_ids[i]), str(predicted[keyed.position[i]])) for i in np.flatnonzero(clash)]
            raise ValidationError(
                f"The sample submission's ids differ from the predicted ones: the ids differ only by their extension "
                f"({len(conflicts)} of them, e.g. {conflicts[0][0]!r} in the sample submission, {conflicts[0][1]!r} "
                "predicted). An id with an extension names one file, so these are not matched: check that the "
                "images are the ones the sample submission lists (not a converted copy), or rename one side.")
    note = _extension_note(predicted, sample_ids, pred_key, sample_key)
    raise ValidationError(
        f"The sample submission's ids differ from the predicted ones: {match.n_missing} of its ids were not "
        f"predicted (e.g. {match.missing}), {match.n_extra} predicted ids are not in it (e.g. {match.extra})"
        + (f"; duplicated: {match.duplicated}" if match.duplicated else "") + note + ".")


def _extension_note(predicted: NDArray, sample_ids: NDArray, pred_key: pd.Series, sample_key: pd.Series) -> str:
    """``"; 3 of them differ only by their extension (e.g. ...)"`` when some unmatched ids do."""
    pred_text = pd.Series(predicted.astype(str), dtype=object)
    sample_text = pd.Series(sample_ids.astype(str), dtype=object)
    lost = ~sample_text.isin(set(pred_text))
    extra = ~pred_text.isin(set(sample_text))
    if not lost.any() or not extra.any():
        return ""
    by_key = dict(zip(pred_key[extra], pred_text[extra]))
    pairs = [(s, by_key[k]) for s, k in zip(sample_text[lost], sample_key[lost]) if k in by_key]
    if not pairs:
        return ""
    return (f"; {len(pairs)} of them differ only by their extension (e.g. {pairs[0][0]!r} in the sample submission, "
            f"{pairs[0][1]!r} predicted)")


def prediction_table(ids: ArrayLike, proba: NDArray, labels: NDArray, classes: list[Any]) -> pd.DataFrame:
    """``id, label, confidence, <class...>``: what ``ensemble-kit predict`` writes by default.

    ``label`` is the decided class (under the stack's decision rules when it has them),
    ``confidence`` the probability of that class (so, under a rule, possibly not the largest
    one), and one column per class (named by the class, in the classes' order) holds its
    probability. A class named like one of the first three columns is refused.
    """
    names = [str(c) for c in classes]
    check_table_classes(classes)
    labels = np.asarray(labels, dtype=np.int64)
    proba = np.asarray(proba)
    frame = pd.DataFrame({"id": np.asarray(ids), "label": np.asarray(classes, dtype=object)[labels],
                          "confidence": proba[np.arange(len(labels)), labels]})
    return pd.concat([frame, pd.DataFrame(proba, columns=names)], axis=1)


def check_table_classes(classes: list[Any]) -> None:
    """Refuse classes that would share a column name with :func:`prediction_table`'s own columns."""
    clash = [str(c) for c in classes if str(c) in TABLE_COLUMNS]
    if clash:
        raise ValidationError(f"Class(es) {clash} would share a column name with the prediction table's "
                              f"{list(TABLE_COLUMNS)} columns; write a competition file instead (--sample-submission "
                              "CSV or --submission).")


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
    frame = submission_frame(store, stack, **options)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False)
    except OSError as exc:
        raise DestinationError(f"{str(out)!r} cannot be written ({exc.strerror or exc}).") from exc
    return out
