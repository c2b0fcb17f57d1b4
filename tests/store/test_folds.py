import numpy as np
import pytest

from ensemble_kit.store import check_folds, make_folds
from ensemble_kit.errors import ValidationError


def test_make_folds_stratified_and_seeded():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    folds = make_folds(y, 5, seed=1)
    assert folds.shape == (100,) and set(folds) == set(range(5))
    for k in range(5):
        np.testing.assert_array_equal(np.bincount(y[folds == k]), [10, 6, 4])
    np.testing.assert_array_equal(folds, make_folds(y, 5, seed=1))


def test_make_folds_names_too_small_class():
    with pytest.raises(ValidationError, match="class 'rare' has 2"):
        make_folds(np.array(["a"] * 10 + ["rare"] * 2), 3)


@pytest.mark.parametrize("n_folds", [1, 0, 2.5, True])
def test_make_folds_bad_n(n_folds):
    with pytest.raises(ValidationError, match="n_folds must be an integer >= 2"):
        make_folds(np.zeros(10), n_folds)


def test_check_folds_shape():
    with pytest.raises(ValidationError, match="one fold index per training sample"):
        check_folds([0, 1], 3)
    with pytest.raises(ValidationError, match="integers"):
        check_folds([0.0, 1.0], 2)


def test_check_folds_maps_any_integer_labels():
    from ensemble_kit.store._folds import fold_labels

    np.testing.assert_array_equal(check_folds([4, 1, 2, 2, 4, 1], 6), [2, 0, 1, 1, 2, 0])
    assert fold_labels([4, 1, 2, 2, 4, 1]) == [1, 2, 4]
    with pytest.raises(ValidationError, match="at least 2 folds"):
        check_folds([3, 3, 3], 3)
    with pytest.raises(ValidationError, match="integers"):
        check_folds([True, False], 2)
