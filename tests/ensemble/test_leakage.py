"""Honest estimates: tuning and scoring on the same rows is optimistic; our OOF estimates are not.

Purpose-built data: labels are random and 12 'models' are pure noise, so no ensemble can
beat chance on new data (accuracy 1/3, log loss ~log 3 or worse).
"""

import numpy as np

from helpers import FAST_GBM
from ensemble_kit import MetaLearner, SoftVoting, Stacker
from ensemble_kit.metrics import accuracy, log_loss


def _noise(n, seed):
    rng = np.random.default_rng(seed)
    return {f"noise{i}": rng.normal(size=(n, 3)) * 2 for i in range(12)}, rng.integers(0, 3, n)


def test_leaky_estimate_is_optimistic_ours_is_not():
    train, y = _noise(600, 0)
    fresh, y_fresh = _noise(600, 1)
    meta = MetaLearner("lightgbm", layout="wide", params={**FAST_GBM, "num_boost_round": 200}).fit(train, y)
    leaky = accuracy(y, meta.predict_proba(train), kind="probs")     # fitted and scored on the same rows
    honest = accuracy(y, meta.oof_proba_, kind="probs")
    truth = accuracy(y_fresh, meta.predict_proba(fresh), kind="probs")
    assert leaky > 0.45                       # optimistic: well above chance
    assert abs(honest - 1 / 3) < 0.07 and abs(truth - 1 / 3) < 0.07
    assert abs(honest - truth) < 0.08


def test_tuned_weights_are_scored_on_unseen_folds():
    train, y = _noise(300, 2)
    vote = SoftVoting(n_trials=60, space="logits").fit(train, y)
    leaky = log_loss(y, vote.predict_proba(train), kind="probs")
    honest = log_loss(y, vote.oof_proba_, kind="probs")
    assert honest > leaky + 0.02
    assert honest > np.log(3) - 0.02          # no better than chance, as it should be


def test_stacker_report_is_honest():
    train, y = _noise(600, 3)
    stk = Stacker(n_trials=20, seed=0).fit(train, y)  # the default: the "full" recipe
    report = stk.report_.set_index("step")
    for step in ["blend", "+temperature", "logreg", "lightgbm"]:
        assert report.loc[step, "accuracy"] < 1 / 3 + 0.07, step
    # a stage that can overfit shows the gap between in-sample and honest accuracy
    leaky_lgbm = accuracy(y, stk.ensemble_.stages_["lightgbm"].predict_proba(train), kind="probs")
    assert leaky_lgbm > report.loc["lightgbm", "accuracy"] + 0.05
    assert accuracy(y, stk.predict_proba(train), kind="probs") >= report.loc["blend", "accuracy"]
