"""Sample-submission ids with extensions, and the prediction table's columns (no model needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ensemble_kit.errors import ValidationError
from ensemble_kit.project.submission import build_submission, match_sample_ids, prediction_table

CLASSES = ["cat", "dog", "emu"]
PROBA = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])


def _sample(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"image": ids, "emu": 0.0, "cat": 0.0, "dog": 0.0})


@pytest.mark.parametrize("predicted, sample", [
    (["img0", "img1", "img2"], ["img2.jpg", "img0.jpg", "img1.jpg"]),    # file-name ids, the sample names the files
    (["img0.png", "img1.png", "img2.png"], ["img2", "img0", "img1"]),    # ids of a CSV with extensions, a bare sample
    (["img0", "img1.PNG", "img2"], ["img2", "img0.jpg", "img1.PNG"]),   # mixed, any case when it is the same
])
def test_ids_that_differ_by_an_extension_on_one_side_match_and_the_sample_ids_are_written(predicted, sample):
    out = build_submission(predicted, PROBA, PROBA.argmax(1), CLASSES, sample_submission=_sample(sample))
    assert out["image"].tolist() == sample  # the sample's ids, extension included, in its order
    np.testing.assert_allclose(out[["cat", "dog", "emu"]].to_numpy(), PROBA[[2, 0, 1]])
    assert match_sample_ids(predicted, sample).tolist() == [2, 0, 1]


def test_two_different_extensions_are_refused_saying_so():
    with pytest.raises(ValidationError, match=r"the ids differ only by their extension \(2 of them, e.g. "
                                              r"'img0.png' in the sample submission, 'img0.jpg' predicted\)"):
        match_sample_ids(["img0.jpg", "img1.jpg", "img2.png"], ["img0.png", "img1.png", "img2.png"])
    with pytest.raises(ValidationError, match="differ only by their extension"):  # case is part of the name
        match_sample_ids(["a.JPG"], ["a.jpg"])


def test_a_real_mismatch_lists_ids_and_counts_those_that_differ_only_by_extension():
    with pytest.raises(ValidationError) as caught:
        match_sample_ids(["img0.jpg", "img1.jpg", "img2"], ["img0.png", "img1.jpg", "zzz"])
    message = str(caught.value)
    assert "2 of its ids were not predicted (e.g. ['img0.png', 'zzz'])" in message
    assert "1 of them differ only by their extension (e.g. 'img0.png' in the sample submission, 'img0.jpg'" in message
    with pytest.raises(ValidationError) as caught:  # no extension involved: no note
        match_sample_ids(["a", "b"], ["a", "c"])
    assert "extension" not in str(caught.value)
    # a sample naming one image twice (a.jpg and a.png) cannot be matched on names without extension
    with pytest.raises(ValidationError, match="were not predicted"):
        match_sample_ids(["a", "b"], ["a.jpg", "a.png"])


def test_prediction_table_labels_come_from_the_decision_and_confidence_is_their_probability():
    decided = np.array([1, 2, 1])  # row 0: a rule chose 'dog' although 'cat' is likelier
    table = prediction_table(["x", "y", "z"], PROBA, decided, CLASSES)
    assert table.columns.tolist() == ["id", "label", "confidence", "cat", "dog", "emu"]
    assert table["label"].tolist() == ["dog", "emu", "dog"]
    np.testing.assert_allclose(table["confidence"], [0.2, 0.6, 0.5])
    np.testing.assert_allclose(table[CLASSES].to_numpy(), PROBA)
    with pytest.raises(ValidationError, match=r"Class\(es\) \['label'\] would share a column name"):
        prediction_table(["x"], PROBA[:1], [0], ["label", "dog", "emu"])
