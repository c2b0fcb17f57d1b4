"""A GBM library's own failure while fitting a stage reaches the user as a named error."""

from __future__ import annotations

import catboost
import pytest

from ensemble_kit import MetaLearner, Stacker
from ensemble_kit.errors import ValidationError
from helpers import make_logits


def test_a_catboost_failure_while_fitting_is_a_named_error_with_a_way_out(monkeypatch):
    def fail(self, *args, **kwargs):
        raise catboost.CatBoostError("catboost/libs/train_lib/trainer_env.cpp:1: class label not present in learn")

    monkeypatch.setattr(catboost.CatBoostClassifier, "fit", fail)
    logits, y = make_logits(n=60)
    with pytest.raises(ValidationError, match=r"CatBoost meta-learner cannot be fitted.*not present in learn.*'aoi'"):
        Stacker([("cb", MetaLearner("catboost")), ("lr", MetaLearner("logreg"))], n_trials=2).fit(logits, y)
