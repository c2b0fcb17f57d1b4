"""Honest estimates: tuning and scoring on the same rows is optimistic; our OOF estimates are not.

Purpose-built data: labels are random and 12 'models' are pure noise, so no ensemble can
beat chance on new data (accuracy 1/3, log loss ~log 3 or worse).
"""

import numpy as np
import pytest

from helpers import FAST_GBM
from ensemble_kit import MetaLearner, SoftVoting, Stacker
from ensemble_kit.metrics import accuracy, log_loss


def _noise(n, seed):
    rng = np.random.default_rng(seed)
    return {f"noise{i}": rng.normal(size=(n, 3)) * 2 for i in range(12)}, rng.integers(0, 3, n)


@pytest.mark.parametrize("n_bags", [1, 3])  # bags see every fitting row, never the fold they predict
def test_leaky_estimate_is_optimistic_ours_is_not(n_bags):
    train, y = _noise(600, 0)
    fresh, y_fresh = _noise(600, 1)
    meta = MetaLearner("lightgbm", layout="wide", params={**FAST_GBM, "num_boost_round": 200},
                       n_bags=n_bags).fit(train, y)
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


def test_logreg_inner_cv_C_sees_only_the_fitting_rows(monkeypatch):
    """The logistic stage's C is chosen inside every fit, on that fit's rows: on random labels it
    picks strong regularisation and its OOF stays at chance; C chosen per fold, not once."""
    from ensemble_kit.ensemble import _learners

    chosen, sizes = [], []
    original = _learners._LogReg._inner_cv_C

    def spy(request):
        sizes.append(len(request.y))
        chosen.append(original(request))
        return chosen[-1]

    monkeypatch.setattr(_learners._LogReg, "_inner_cv_C", staticmethod(spy))
    train, y = _noise(600, 4)
    meta = MetaLearner("logreg", layout="wide").fit(train, y)
    assert sorted(sizes) == [480] * 5 + [600]        # five fold fits on 4/5 of the rows, one final fit
    assert max(chosen) <= 0.01                       # noise: the smallest C on the grid wins
    assert log_loss(y, meta.oof_proba_, kind="probs") > np.log(3) - 0.01
    assert abs(accuracy(y, meta.oof_proba_, kind="probs") - 1 / 3) < 0.07


def test_logreg_inner_cv_prefers_weak_regularisation_on_signal():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 600)
    strong = {f"m{i}": np.eye(3)[y] * 4 + rng.normal(size=(600, 3)) for i in range(3)}
    meta = MetaLearner("logreg", layout="wide").fit(strong, y)
    assert meta.models_[0].steps[-1][1].C >= 0.1
    fixed = MetaLearner("logreg", layout="wide", params={"C": 0.002}).fit(strong, y)
    assert fixed.models_[0].steps[-1][1].C == 0.002      # a given C is used as is, no search


def test_blend_stage_temperatures_are_fitted_on_the_fitting_rows_only(monkeypatch):
    """Each fold's stage temperatures see only the other folds' rows; on random labels the blend
    stays at chance."""
    from ensemble_kit import Blender
    from ensemble_kit.ensemble import blending

    seen = []
    original = blending.fit_temperature
    monkeypatch.setattr(blending, "fit_temperature", lambda z, y, **kw: seen.append(len(y)) or original(z, y, **kw))
    train, y = _noise(300, 4)
    blend = Blender([("vote", SoftVoting("equal")), ("lr", MetaLearner("logreg", layout="wide"))],
                    n_trials=10).fit(train, y)
    fold_sizes = sorted(int((blend.folds_ != k).sum()) for k in np.unique(blend.folds_))
    assert sorted(seen) == sorted([*(size for size in fold_sizes for _ in range(2)), 300, 300])
    assert log_loss(y, blend.oof_proba_, kind="probs") > np.log(3) - 0.02


def test_enqueued_mixture_optimum_sees_only_the_fitting_rows(monkeypatch):
    """The exact mixture optimum (the soft vote's first trial) is computed per fit on that fit's
    rows only; with one trial the vote is that optimum, and on random labels its OOF stays at chance."""
    from ensemble_kit.ensemble import voting

    seen = []
    original = voting.mixture_optimum
    monkeypatch.setattr(voting, "mixture_optimum", lambda p, **kw: seen.append(p.shape[1]) or original(p, **kw))
    train, y = _noise(300, 5)
    vote = SoftVoting(n_trials=1, space="probs").fit(train, y)
    fold_sizes = sorted(int((vote.folds_ != k).sum()) for k in np.unique(vote.folds_))
    assert sorted(seen) == sorted([*fold_sizes, 300])
    assert log_loss(y, vote.oof_proba_, kind="probs") > np.log(3) - 0.02
