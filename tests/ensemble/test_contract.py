"""Contract tests run over every registered ensembler (scikit-learn estimator conventions)."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from helpers import FAST_CATBOOST, FAST_GBM
from ensemble_kit import LogitStore, create_ensembler, list_ensemblers
from ensemble_kit.errors import ValidationError

FAST_PARAMS = {
    "soft_vote": dict(n_trials=15),
    "hill_climbing": dict(n_iter=15),
    "meta_learner": dict(learner="lightgbm", params=FAST_GBM),
    "blend": dict(weights={"a": 0.5, "b": 0.5}),
}


def make(name, **extra):
    from ensemble_kit import HillClimbing, SoftVoting

    params = dict(FAST_PARAMS.get(name, {}))
    if name == "blend":
        params["stages"] = [("a", SoftVoting("equal")), ("b", HillClimbing(n_iter=5))]
    return create_ensembler(name, **{**params, **extra})


def test_registry_lists_every_stage():
    assert set(list_ensemblers()) >= {"soft_vote", "hill_climbing", "meta_learner", "blend"}
    with pytest.raises(ValidationError, match="Unknown ensembler 'nope'"):
        create_ensembler("nope")


@pytest.mark.parametrize("name", list_ensemblers())
def test_estimator_contract(name, logits_y):
    logits, y = logits_y
    est = make(name)
    params = est.get_params()
    assert clone(est).get_params().keys() == params.keys()
    assert not [k for k in vars(est) if k.endswith("_")], "__init__ must only store params"
    with pytest.raises(NotFittedError):
        est.predict_proba(logits)
    assert est.fit(logits, y) is est
    proba = est.predict_proba(logits)
    assert proba.shape == (240, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert est.oof_proba_.shape == (240, 3) and est.model_names_ == ("m0", "m1", "m2")
    np.testing.assert_allclose(est.oof_proba_.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(est.predict(logits), proba.argmax(axis=1))
    assert np.mean(est.predict(logits) == y) > 0.6


@pytest.mark.parametrize("name", list_ensemblers())
def test_containers_give_the_same_fit(name, logits_y, tmp_path):
    logits, y = logits_y
    folds = np.arange(240) % 4
    by_dict = make(name).fit(logits, y, folds=folds)
    by_array = make(name).fit(np.stack(list(logits.values())), y, folds=folds)
    store = LogitStore.create(tmp_path / "s", np.arange(240), y, [0, 1, 2], folds=folds, test_ids=np.arange(50))
    for model_name, values in logits.items():
        store.put(model_name, values, values[:50])
    by_store = make(name).fit(store)
    np.testing.assert_allclose(by_dict.oof_proba_, by_array.oof_proba_, atol=1e-6)
    np.testing.assert_allclose(by_dict.oof_proba_, by_store.oof_proba_, atol=1e-5)
    test_from_store = by_store.predict_proba(store)
    np.testing.assert_allclose(test_from_store, by_dict.predict_proba({n: v[:50] for n, v in logits.items()}), atol=1e-5)


@pytest.mark.parametrize("name", list_ensemblers())
def test_deterministic_given_seed(name, logits_y):
    logits, y = logits_y
    a = make(name).fit(logits, y).predict_proba(logits)
    b = make(name).fit(logits, y).predict_proba(logits)
    np.testing.assert_allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("name", list_ensemblers())
def test_bad_input(name, logits_y):
    logits, y = logits_y
    est = make(name)
    if est._min_models > 1:
        with pytest.raises(ValidationError, match=r"needs at least 2 models to ensemble \(.+\).*\['m0'\]"):
            est.fit({"m0": logits["m0"]}, y)
    else:  # a single model is a valid vote
        assert est.fit({"m0": logits["m0"]}, y).predict_proba({"m0": logits["m0"]}).shape == (240, 3)
    with pytest.raises(ValidationError, match="Model 'm1' has 239 rows but model 'm0' has 240"):
        est.fit({"m0": logits["m0"], "m1": logits["m1"][:-1]}, y)
    with pytest.raises(ValidationError, match="Model 'm1' has 4 classes but model 'm0' has 3"):
        est.fit({"m0": logits["m0"], "m1": np.zeros((240, 4))}, y)
    bad = dict(logits, m2=np.where(np.arange(240)[:, None] == 5, np.nan, logits["m2"]))
    with pytest.raises(ValidationError, match=r"model\(s\) \['m2'\] hold NaN or inf"):
        est.fit(bad, y)
    with pytest.raises(ValidationError, match=r"labels outside the 3 classes.*\[7\]"):
        est.fit(logits, np.where(np.arange(240) == 3, 7, y))
    est.fit(logits, y)
    with pytest.raises(ValidationError, match="different order"):
        est.predict_proba({"m1": logits["m1"], "m0": logits["m0"], "m2": logits["m2"]})
    with pytest.raises(ValidationError, match=r"missing \['m2'\], unexpected \['x'\]"):
        est.predict_proba({"m0": logits["m0"], "m1": logits["m1"], "x": logits["m2"]})


def test_catboost_and_logreg_meta_learners_fit(logits_y):
    from ensemble_kit import MetaLearner

    logits, y = logits_y
    for meta in [MetaLearner("catboost", params=FAST_CATBOOST), MetaLearner("logreg"),
                 MetaLearner("catboost", layout="classwise", params=FAST_CATBOOST)]:
        meta.fit(logits, y)
        assert np.mean(meta.oof_proba_.argmax(1) == y) > 0.6
