import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from ensemble_kit import ClassThresholds, TemperatureScaling
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import f1_macro, log_loss, softmax


def _imbalanced(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    logits = np.eye(3)[y] * 1.2 + rng.normal(size=(n, 3))
    logits[:, 2] -= 2.0  # the rare class is systematically under-predicted
    return softmax(logits), y


def test_fixed_rule_predicts_rare_class_above_threshold():
    p = np.array([[0.55, 0.0, 0.45], [0.7, 0.0, 0.3], [0.2, 0.5, 0.3]])
    ct = ClassThresholds(rules={2: 0.4}).fit(p, np.array([2, 0, 1]))
    assert ct.predict(p).tolist() == [2, 0, 1]
    assert ct.rules_ == {2: 0.4}


def test_several_rules_pick_largest_ratio():
    p = np.array([[0.1, 0.45, 0.45]])
    assert ClassThresholds(rules={1: 0.4, 2: 0.3}).fit(p, np.array([2])).predict(p).tolist() == [2]


def test_optimized_offsets_improve_macro_f1_on_new_data():
    p, y = _imbalanced(0)
    p_new, y_new = _imbalanced(1)
    ct = ClassThresholds(optimize="f1_macro").fit(p, y)
    assert ct.offsets_[2] - ct.offsets_[:2].max() > 0.5  # the rare class is pushed up
    assert f1_macro(y_new, np.log(p_new) + ct.offsets_, kind="logits") > f1_macro(y_new, p_new, kind="probs") + 0.02


def test_recall_at_min_precision():
    p, y = _imbalanced(0)
    ct = ClassThresholds(optimize="recall", target_class=2, min_precision=0.5).fit(p, y)
    t = ct.rules_[2]
    chosen = p[:, 2] > t
    precision = np.mean(y[chosen] == 2)
    assert precision >= 0.5
    # lowering the threshold any further breaks the precision floor
    looser = p[:, 2] > (t - 0.02)
    assert np.mean(y[looser] == 2) < 0.5 + 0.02


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "exactly one of"),
        (dict(rules={5: 0.4}), "class 5 is not a class index"),
        (dict(rules={1: 1.4}), "must be a probability"),
        (dict(optimize="auc"), "optimize must be one of"),
        (dict(optimize="recall", target_class=1), "min_precision"),
    ],
)
def test_threshold_bad_input(kwargs, message):
    p = np.full((4, 3), 1 / 3)
    with pytest.raises(ValidationError, match=message):
        ClassThresholds(**kwargs).fit(p, np.array([0, 1, 2, 0]))


def test_threshold_not_fitted():
    with pytest.raises(NotFittedError):
        ClassThresholds(rules={1: 0.5}).predict(np.full((2, 3), 1 / 3))


def test_temperature_scaling_calibrates():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 2000)
    logits = np.eye(4)[y] * 1.5 + rng.normal(size=(2000, 4))
    hot = logits * 4
    ts = TemperatureScaling().fit(hot, y)
    assert 2.5 < ts.temperature_ < 6
    assert log_loss(y, ts.transform(hot), kind="logits") < log_loss(y, hot, kind="logits") - 0.3
    probs_ts = TemperatureScaling(kind="probs").fit(softmax(hot), y)
    assert abs(probs_ts.temperature_ - ts.temperature_) < 0.05


def test_a_temperature_beyond_max_rows_is_fitted_on_a_seeded_sample():
    from ensemble_kit.decision.calibration import fit_temperature

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 30_000)
    logits = (np.eye(5)[y] * 2 + rng.normal(size=(30_000, 5))) * 3  # over-confident: T above 1
    full = fit_temperature(logits, y, max_rows=None)
    sampled = fit_temperature(logits, y, max_rows=5_000, seed=1)
    assert full > 1.3 and abs(sampled - full) < 0.05 * full
    assert fit_temperature(logits, y, max_rows=5_000, seed=1) == sampled  # reproducible
    assert fit_temperature(logits, y, max_rows=5_000, seed=2) != sampled   # the seed draws the sample
    probs = softmax(logits)
    assert fit_temperature(probs, y, kind="probs", max_rows=None) == pytest.approx(full, rel=1e-3)
