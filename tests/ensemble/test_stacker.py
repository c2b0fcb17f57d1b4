import numpy as np
import optuna
import pytest

from helpers import FAST_CATBOOST, FAST_GBM, make_logits
from ensemble_kit import ClassThresholds, HillClimbing, LogitStore, MetaLearner, SoftVoting, Stacker
from ensemble_kit.errors import ValidationError


FAST = {"catboost__params": FAST_CATBOOST, "lightgbm__params": FAST_GBM}


def fast(recipe="full", **params):
    """A recipe with short boosting, so tests run in seconds: every stage is a visible parameter."""
    return Stacker.from_recipe(recipe, **params).set_params(**FAST)


def _store(tmp_path, logits, y, n_test=60):
    store = LogitStore.create(tmp_path / "s", np.arange(len(y)), y, [0, 1, 2], n_folds=4, seed=0,
                              test_ids=np.arange(n_test))
    rng = np.random.default_rng(9)
    for name, values in logits.items():
        store.put(name, values, values[:n_test] + rng.normal(size=(n_test, 3)) * 0.1)
    return store


def test_yandex_recipe_report_and_predict():
    logits, y = make_logits(n=300)
    stk = fast("yandex", n_trials=15).fit(logits, y)
    labels_stk = fast("yandex", metric="f1_macro", n_trials=15).fit(logits, y)
    assert labels_stk.thresholds_ is not None and labels_stk.temperature_ is None
    steps = stk.report_["step"].tolist()
    assert steps == ["m0", "m1", "m2", "mean_probs", "catboost", "lightgbm", "soft_vote", "blend", "+temperature"]
    assert labels_stk.report_["step"].tolist()[-1] == "+thresholds"
    assert set(stk.report_.columns) >= {"log_loss", "accuracy", "f1_macro", "fit_seconds", "kind", "kept"}
    assert stk.ensemble_.weights_ == {"catboost": 0.4, "lightgbm": 0.3, "soft_vote": 0.3}
    assert stk.temperature_ is not None and stk.thresholds_ is None
    proba = stk.predict_proba(logits)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-6)
    assert stk.predict(logits).shape == (300,)
    report = stk.report_.set_index("step")
    assert report.loc["blend", "log_loss"] < report.loc["m0", "log_loss"]


def test_full_recipe_is_the_default_and_tunes_a_nested_blend():
    logits, y = make_logits(n=300)
    stk = fast(n_trials=15).fit(logits, y)
    default = Stacker(n_trials=15)
    assert [name for name, _ in Stacker.from_recipe().stages] == [name for name, _ in default._stages()]
    assert (default.blend, default.calibrate, default.thresholds) == ("optuna", "auto", "auto")
    assert stk.report_["step"].tolist() == ["m0", "m1", "m2", "mean_probs", "logreg", "catboost", "lightgbm",
                                            "soft_vote", "blend", "+temperature"]
    weights = stk.ensemble_.weights_
    assert set(weights) == {"logreg", "catboost", "lightgbm", "soft_vote"}
    assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) >= 0
    blend_studies = [n for n in stk.study_names_ if n.startswith("blend-")]
    assert len(blend_studies) == 6 and sum(n.endswith("-final") for n in blend_studies) == 1  # 5 folds + final
    report = stk.report_.set_index("step")
    assert report.loc["blend", "log_loss"] < report.loc["m2", "log_loss"]
    np.testing.assert_allclose(stk.predict_proba(logits).sum(1), 1, atol=1e-6)
    labels_stk = fast(metric="f1_macro", n_trials=15).fit(logits, y)
    assert labels_stk.temperature_ is None and labels_stk.report_["step"].iloc[-1] == "+thresholds"
    # what the deleted "logloss" recipe did: the full stages, a temperature whatever the metric
    calibrated = fast(metric="f1_macro", n_trials=15).set_params(calibrate=True, thresholds=None).fit(logits, y)
    assert calibrated.report_["step"].iloc[-1] == "+temperature" and calibrated.thresholds_ is None
    assert (calibrated.temperature_ is not None) != calibrated.temperature_rejected_


def test_full_recipe_stacks_class_wise_at_many_classes():
    logits, y = make_logits(n=500, n_classes=25, strength=(2.0, 3.0, 4.0))
    stk = fast(n_trials=5).fit(logits, y)
    assert {name: stage.layout_ for name, stage in stk.ensemble_.stages_.items() if name != "soft_vote"} == {
        "logreg": "classwise", "catboost": "classwise", "lightgbm": "classwise"}
    report = stk.report_.set_index("step")
    assert report.loc["logreg", "log_loss"] < report.loc["m2", "log_loss"]


def test_recipe_names_come_from_one_registry_in_the_api_config_and_cli():
    from ensemble_kit import list_recipes, register_recipe
    from ensemble_kit.cli.main import build_parser
    from ensemble_kit.ensemble._recipes import DEFAULT_RECIPE, RECIPES
    from ensemble_kit.project.config import StackConfig

    assert list_recipes() == ["aoi", "average", "full", "hill_climb", "yandex"]
    assert StackConfig().recipe == DEFAULT_RECIPE
    stack_parser = build_parser()._subparsers._group_actions[0].choices["stack"]
    recipe_action = next(a for a in stack_parser._actions if a.dest == "recipe")
    # the CLI's default is the project's stack.recipe, else the registry's default
    assert list(recipe_action.choices) == list_recipes() and f"else {DEFAULT_RECIPE}" in recipe_action.help

    @register_recipe("vote_only")
    def vote_only(*, metric, n_trials, seed, storage):
        """Just an equal vote."""
        return {"stages": [("vote", SoftVoting("equal"))], "calibrate": False, "thresholds": None}

    try:
        assert StackConfig(recipe="vote_only").recipe == "vote_only"  # config validation reads the registry
        stage_names = [n for n, _ in Stacker.from_recipe("vote_only").stages]
        assert stage_names == ["vote"] and RECIPES.summary("vote_only") == "Just an equal vote."
        with pytest.raises(ValidationError, match="already registered"):
            register_recipe("vote_only", lambda **_: {})
        register_recipe("vote_only", vote_only, replace=True)
    finally:
        RECIPES._items.pop("vote_only")
    with pytest.raises(ValidationError, match=r"'stack.recipe': Unknown recipe 'ful'; did you mean 'full'"):
        StackConfig(recipe="ful")


def test_aoi_recipe_applies_class_two_rule():
    logits, y = make_logits(n=300)
    stk = Stacker.from_recipe("aoi", n_trials=10).fit(logits, y)
    assert stk.thresholds_.rules_ == {2: 0.4}
    proba = stk.predict_proba(logits)
    pred = stk.predict(logits)
    assert (pred[proba[:, 2] > 0.4] == 2).all()


def test_hill_climb_and_custom_recipes():
    logits, y = make_logits(n=300)
    assert Stacker.from_recipe("hill_climb").fit(logits, y).report_["step"].tolist()[-1] == "hill_climbing"
    custom = Stacker([("vote", SoftVoting("equal")), ("hc", HillClimbing(n_iter=5)), ("lr", MetaLearner("logreg"))],
                     blend="optuna", calibrate=True, thresholds=ClassThresholds(optimize="accuracy"), n_trials=10)
    custom.fit(logits, y)
    assert set(custom.ensemble_.weights_) == {"vote", "hc", "lr"}
    assert custom.report_["step"].tolist()[-3:] == ["blend", "+temperature", "+thresholds"]


def test_recipe_errors():
    logits, y = make_logits(n=120)
    with pytest.raises(ValidationError, match="Unknown recipe 'kaggle'"):
        Stacker.from_recipe("kaggle")
    with pytest.raises(ValidationError, match=r"list of \(name, ensembler\) pairs"):
        Stacker({"v": SoftVoting()}).fit(logits, y)
    with pytest.raises(ValidationError, match="calibrate must be"):
        Stacker([("v", SoftVoting("equal"))], calibrate="yes").fit(logits, y)
    with pytest.raises(ValidationError, match="Unknown metric 'auc'"):
        Stacker(metric="auc").fit(logits, y)
    with pytest.raises(ValidationError, match=r"at least 2 models .*stage 'logreg'.*from_recipe\('average'\)"):
        Stacker().fit({"m0": logits["m0"]}, y)


def test_fit_from_store_keeps_studies_in_store(tmp_path):
    logits, y = make_logits(n=300)
    store = _store(tmp_path, logits, y)
    stk = Stacker.from_recipe("aoi", n_trials=8).fit(store)
    assert stk.storage_ == f"sqlite:///{(store.path / 'optuna.db').resolve()}"
    summaries = optuna.get_all_study_summaries(stk.storage_)
    assert {s.study_name for s in summaries} == set(stk.study_names_) and len(summaries) == 5  # 4 folds + final
    proba = stk.predict_proba(store)
    assert proba.shape == (60, 3)
    np.testing.assert_array_equal(stk.folds_, store.folds)
    with pytest.raises(ValidationError, match="Models differ"):
        stk.predict_proba(store, models=["m0", "m1"])


def test_study_names_are_deterministic():
    logits, y = make_logits(n=200)
    a = Stacker.from_recipe("aoi", n_trials=5).fit(logits, y)
    b = Stacker.from_recipe("aoi", n_trials=5).fit(logits, y)
    assert a.study_names_ == b.study_names_
    c = Stacker.from_recipe("aoi", n_trials=5, metric="accuracy").fit(logits, y)
    assert c.study_names_ != a.study_names_


def test_offsets_that_lose_on_held_out_folds_are_rejected():
    # Each fold's OOF predictions favour a different class (fold 0: class 0, fold 1: class 1):
    # offsets tuned on one fold undo a bias the other fold does not have, so nested CV scores
    # them below arg-max, and the Stacker must keep arg-max decisions.
    rng = np.random.default_rng(0)
    y = np.arange(400) % 3
    folds = (np.arange(400) // 3) % 2
    bias = np.zeros((400, 3))
    bias[folds == 0, 0] = 1.5
    bias[folds == 1, 1] = 1.5
    logits = {f"m{i}": np.eye(3)[y] * 2 + bias + rng.normal(size=(400, 3)) for i in range(2)}
    stk = Stacker([("vote", SoftVoting("equal"))], thresholds=ClassThresholds(optimize="accuracy"),
                  metric="accuracy").fit(logits, y, folds=folds)
    last = stk.report_.iloc[-1]
    assert last["step"] == "+thresholds" and not last["kept"] and stk.thresholds_rejected_
    assert last["accuracy"] < stk.report_.set_index("step").loc["vote", "accuracy"]
    assert stk.thresholds_ is None
    np.testing.assert_array_equal(stk.oof_labels_, stk.oof_proba_.argmax(1))
    np.testing.assert_array_equal(stk.predict(logits), stk.predict_proba(logits).argmax(1))


def _absent_class_inputs():
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    folds = np.arange(120) % 4
    y[y == 2] = 0
    y[:6], folds[:6] = 2, 0  # class 2 lives in fold 0 only: the fold-0 clones never see it
    return {f"m{i}": rng.normal(size=(120, 3)) + np.eye(3)[y] for i in range(3)}, y, folds


@pytest.mark.parametrize("where", ["absent everywhere", "absent outside one fold"])
def test_default_recipe_keeps_every_class_column_and_warns(caplog, where):
    logits, y, folds = _absent_class_inputs()
    if where == "absent everywhere":
        y, folds = np.where(y == 2, 1, y), np.arange(120) % 4
    stk = fast(n_trials=8).fit(logits, y, folds=folds)
    proba = stk.predict_proba(logits)
    assert proba.shape == (120, 3) and np.allclose(proba.sum(axis=1), 1)
    assert stk.oof_proba_.shape == (120, 3)
    assert "classes [2] have no" in caplog.text


@pytest.mark.parametrize("case, message", [
    ("single class", "every row has class 0"),
    ("constant logits", "every model predicts the same logits"),
    ("zero rows", "no rows"),
])
def test_degenerate_inputs_get_named_errors(case, message):
    if case == "single class":
        logits, y = make_logits(n=60)
        y = np.zeros_like(y)
    elif case == "constant logits":
        y = np.arange(60) % 3
        logits = {f"m{i}": np.tile([0.1, 0.2, 0.3], (60, 1)) for i in range(3)}
    else:
        y = np.zeros(0, dtype=np.int64)
        logits = {f"m{i}": np.zeros((0, 3)) for i in range(3)}
    with pytest.raises(ValidationError, match=message):
        Stacker(n_trials=5).fit(logits, y)


def test_stages_of_a_recipe_are_ordinary_params():
    from sklearn.base import clone

    stk = Stacker.from_recipe("full", n_trials=7)
    params = stk.get_params()
    assert params["catboost"].learner == "catboost" and params["soft_vote__n_trials"] == 7
    tuned = clone(stk).set_params(logreg__params={"C": 0.1}, blend={"logreg": 1.0, "catboost": 1.0, "lightgbm": 1.0,
                                                                      "soft_vote": 1.0})
    assert tuned.get_params()["logreg__params"] == {"C": 0.1} and stk.get_params()["logreg__params"] is None
    assert clone(tuned).get_params(deep=False).keys() == stk.get_params(deep=False).keys()


def test_a_temperature_that_worsens_nested_log_loss_is_rejected():
    # perfectly calibrated OOF probabilities: a temperature fitted on K-1 folds can only hurt
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3) * 0.7, size=600)
    y = np.array([rng.choice(3, p=row) for row in p])
    logits = {"a": np.log(p), "b": np.log(p) + rng.normal(size=p.shape) * 1e-3}
    stk = Stacker([("vote", SoftVoting("equal"))], calibrate=True, thresholds=None).fit(logits, y)
    row = stk.report_.iloc[-1]
    if stk.temperature_rejected_:
        assert row["step"] == "+temperature" and not row["kept"] and stk.temperature_ is None
        np.testing.assert_allclose(stk.predict_proba(logits), stk.ensemble_.predict_proba(logits))
    else:  # kept only because it did not make nested log loss worse
        vote = stk.report_.set_index("step").loc["vote", "log_loss"]
        assert row["kept"] and row["log_loss"] <= vote


def test_meta_folds_are_the_base_models_folds():
    """docs/stacking.md: every stage, the blend and the nested steps use the folds passed in (the
    base models' own), never folds of their own that would cut across them."""
    logits, y = make_logits(n=200)
    folds = np.arange(200) % 4
    stk = Stacker(stages=[("vote", SoftVoting("equal")), ("hc", HillClimbing(n_iter=5))], n_trials=5).fit(
        logits, y, folds=folds)
    np.testing.assert_array_equal(stk.folds_, folds)
    np.testing.assert_array_equal(stk.ensemble_.folds_, folds)
    for stage in stk.ensemble_.stages_.values():
        np.testing.assert_array_equal(stage.folds_, folds)
