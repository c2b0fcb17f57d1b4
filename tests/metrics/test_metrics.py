import numpy as np
import pytest
from sklearn import metrics as skm

from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import (
    accuracy,
    f1_macro,
    get_metric,
    log_loss,
    log_softmax,
    per_class_precision,
    per_class_recall,
    per_class_report,
    softmax,
    to_log_probs,
)
from ensemble_kit.metrics._classification import f1_macro_of_labels


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(200, 4)) * 2
    y = rng.integers(0, 4, size=200)
    return y, logits, softmax(logits)


def test_log_loss_matches_sklearn_for_both_kinds(data):
    y, logits, probs = data
    expected = skm.log_loss(y, probs, labels=range(4))
    assert log_loss(y, logits, kind="logits") == pytest.approx(expected, rel=1e-9)
    assert log_loss(y, probs, kind="probs") == pytest.approx(expected, rel=1e-9)


def test_accuracy_and_f1_match_sklearn(data):
    y, logits, probs = data
    pred = logits.argmax(1)
    assert accuracy(y, logits, kind="logits") == pytest.approx(skm.accuracy_score(y, pred))
    assert f1_macro(y, probs, kind="probs") == pytest.approx(skm.f1_score(y, pred, average="macro"))
    np.testing.assert_allclose(per_class_recall(y, logits, kind="logits"), skm.recall_score(y, pred, average=None))
    np.testing.assert_allclose(per_class_precision(y, logits, kind="logits"),
                               skm.precision_score(y, pred, average=None, zero_division=0))


def test_absent_class_counts_in_macro_f1():
    y = np.array([0, 0, 1, 1])
    scores = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], dtype=float)
    assert f1_macro(y, scores, kind="probs") == pytest.approx(2 / 3)
    report = per_class_report(y, scores, kind="probs", classes=["a", "b", "c"])
    assert report.index.tolist() == ["a", "b", "c"] and report.loc["c", "support"] == 0


@pytest.mark.parametrize("n, n_classes, seed", [(1, 2, 0), (7, 5, 1), (200, 4, 2), (500, 25, 3), (60, 396, 4)])
def test_macro_f1_of_labels_is_sklearns_with_absent_and_never_predicted_classes(n, n_classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, max(1, n_classes - 2), n)  # the last classes never occur...
    decided = np.where(rng.random(n) < 0.6, y, rng.integers(0, n_classes, n))  # ...some are predicted anyway
    decided[decided == 1] = 0  # and class 1 occurs but is never predicted
    expected = skm.f1_score(y, decided, labels=np.arange(n_classes), average="macro", zero_division=0)
    assert f1_macro_of_labels(y, decided, n_classes) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert f1_macro_of_labels(y.astype(np.int16), decided.astype(np.uint16), n_classes) == pytest.approx(expected)


def test_logits_never_overflow():
    logits = np.array([[1000.0, 0.0], [0.0, -1000.0]])
    assert np.isfinite(log_softmax(logits)).all()
    assert log_loss(np.array([0, 0]), logits, kind="logits") == pytest.approx(0.0, abs=1e-12)
    assert log_loss(np.array([1, 1]), logits, kind="logits") == pytest.approx(1000.0)


def test_probs_with_zero_are_clipped():
    assert log_loss(np.array([1]), np.array([[1.0, 0.0]]), kind="probs") == pytest.approx(-np.log(1e-12))
    assert np.isfinite(to_log_probs(np.array([[1.0, 0.0]]), kind="probs")).all()


@pytest.mark.parametrize(
    "y, scores, kind, message",
    [
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], "proba", "declared, never guessed"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], "probs", r"y\[1\] = 2 is not a class index"),
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], "probs", "one label per row"),
        ([0.0, 1.0], [[0.5, 0.5], [0.5, 0.5]], "probs", "integer class indices"),
        ([0, 1], [0.5, 0.5], "probs", "2-D"),
        ([0, 1], [[0.5, np.nan], [0.5, 0.5]], "logits", "row 0 holds NaN"),
    ],
)
def test_bad_input(y, scores, kind, message):
    with pytest.raises(ValidationError, match=message):
        log_loss(np.array(y), np.array(scores), kind=kind)


def test_kind_is_required(data):
    y, logits, _ = data
    with pytest.raises(TypeError):
        accuracy(y, logits)  # type: ignore[call-arg]


def test_registry():
    assert get_metric("f1_macro").greater_is_better
    y, logits = np.array([0, 1]), np.array([[2.0, 0.0], [0.0, 2.0]])
    assert get_metric("accuracy").loss(y, logits, kind="logits") == -1.0
    with pytest.raises(ValidationError, match="Unknown metric 'auc'"):
        get_metric("auc")


def test_log_softmax_in_row_blocks_equals_the_whole_array_formula():
    from ensemble_kit.metrics import _scores

    rng = np.random.default_rng(0)
    big = (rng.normal(size=(3, 1500, 400)) * 20).astype(np.float32)  # 1.8M values: several blocks
    assert big.size > _scores._BLOCK_VALUES
    expected = big - big.max(axis=-1, keepdims=True)
    expected -= np.log(np.exp(expected).sum(axis=-1, keepdims=True))
    out = log_softmax(big)
    assert out.dtype == np.float32 and out.shape == big.shape
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # other axes take the one-block path, strided views are copied to C order first: same result
    np.testing.assert_allclose(log_softmax(big.transpose(2, 1, 0), axis=0), expected.transpose(2, 1, 0), atol=1e-5)
    np.testing.assert_allclose(log_softmax(big[:, ::2]), expected[:, ::2], atol=1e-5)
    np.testing.assert_allclose(np.exp(log_softmax(np.array([1, 2, 3]))).sum(), 1.0)
