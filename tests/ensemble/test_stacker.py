import numpy as np
import optuna
import pytest

from helpers import FAST_CATBOOST, FAST_GBM, make_logits
from ensemble_kit import ClassThresholds, HillClimbing, LogitStore, MetaLearner, SoftVoting, Stacker
from ensemble_kit.errors import ValidationError


@pytest.fixture
def fast_yandex(monkeypatch):
    """The yandex recipe with short boosting, so tests run in seconds."""
    import ensemble_kit.ensemble.blending as blending

    original = blending.default_stages

    def fast(**kwargs):
        stages = original(**kwargs)
        stages["catboost"].set_params(params=FAST_CATBOOST)
        stages["lightgbm"].set_params(params=FAST_GBM)
        return stages

    monkeypatch.setattr(blending, "default_stages", fast)
    import ensemble_kit.ensemble._recipes as recipes

    monkeypatch.setattr(recipes, "default_stages", fast)


def _store(tmp_path, logits, y, n_test=60):
    store = LogitStore.create(tmp_path / "s", np.arange(len(y)), y, [0, 1, 2], n_folds=4, seed=0,
                              test_ids=np.arange(n_test))
    rng = np.random.default_rng(9)
    for name, values in logits.items():
        store.put(name, values, values[:n_test] + rng.normal(size=(n_test, 3)) * 0.1)
    return store


def test_yandex_recipe_report_and_predict(fast_yandex):
    logits, y = make_logits(n=300)
    stk = Stacker(recipe="yandex", n_trials=15).fit(logits, y)
    labels_stk = Stacker(recipe="yandex", metric="f1_macro", n_trials=15).fit(logits, y)
    assert labels_stk.thresholds_ is not None and labels_stk.temperature_ is None
    steps = stk.report_["step"].tolist()
    assert steps == ["m0", "m1", "m2", "mean_probs", "catboost", "lightgbm", "soft_vote", "blend", "+temperature"]
    assert labels_stk.report_["step"].tolist()[-1] == "+thresholds"
    assert set(stk.report_.columns) >= {"log_loss", "accuracy", "f1_macro", "fit_seconds", "kind"}
    assert stk.blender_.weights_ == {"catboost": 0.4, "lightgbm": 0.3, "soft_vote": 0.3}
    assert stk.temperature_ is not None and stk.thresholds_ is None
    proba = stk.predict_proba(logits)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-6)
    assert stk.predict(logits).shape == (300,)
    report = stk.report_.set_index("step")
    assert report.loc["blend", "log_loss"] < report.loc["m0", "log_loss"]


def test_full_recipe_is_the_default_and_tunes_a_nested_blend(fast_yandex):
    logits, y = make_logits(n=300)
    stk = Stacker(n_trials=15).fit(logits, y)
    assert stk.recipe == "full"
    assert stk.report_["step"].tolist() == ["m0", "m1", "m2", "mean_probs", "logreg", "catboost", "lightgbm",
                                            "soft_vote", "blend", "+temperature"]
    weights = stk.blender_.weights_
    assert set(weights) == {"logreg", "catboost", "lightgbm", "soft_vote"}
    assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) >= 0
    blend_studies = [n for n in stk.study_names_ if n.startswith("blend-")]
    assert len(blend_studies) == 6 and sum(n.endswith("-final") for n in blend_studies) == 1  # 5 folds + final
    report = stk.report_.set_index("step")
    assert report.loc["blend", "log_loss"] < report.loc["m2", "log_loss"]
    np.testing.assert_allclose(stk.predict_proba(logits).sum(1), 1, atol=1e-6)
    labels_stk = Stacker(metric="f1_macro", n_trials=15).fit(logits, y)
    assert labels_stk.temperature_ is None and labels_stk.report_["step"].iloc[-1].startswith("+thresholds")
    logloss = Stacker(recipe="logloss", metric="f1_macro", n_trials=15).fit(logits, y)
    assert logloss.temperature_ is not None and logloss.thresholds_ is None


def test_full_recipe_stacks_class_wise_at_many_classes(fast_yandex):
    logits, y = make_logits(n=500, n_classes=25, strength=(2.0, 3.0, 4.0))
    stk = Stacker(n_trials=5).fit(logits, y)
    assert {name: stage.layout_ for name, stage in stk.blender_.stages_.items() if name != "soft_vote"} == {
        "logreg": "classwise", "catboost": "classwise", "lightgbm": "classwise"}
    report = stk.report_.set_index("step")
    assert report.loc["logreg", "log_loss"] < report.loc["m2", "log_loss"]


def test_recipe_names_agree_across_the_api_config_and_cli():
    import typing

    from ensemble_kit.cli.main import build_parser
    from ensemble_kit.ensemble._recipes import DEFAULT_RECIPE, RECIPES
    from ensemble_kit.project.config import StackConfig

    assert typing.get_args(typing.get_type_hints(StackConfig)["recipe"]) == RECIPES
    assert StackConfig().recipe == DEFAULT_RECIPE == Stacker().recipe
    stack_parser = build_parser()._subparsers._group_actions[0].choices["stack"]
    recipe_action = next(a for a in stack_parser._actions if a.dest == "recipe")
    assert tuple(recipe_action.choices) == RECIPES and recipe_action.default == DEFAULT_RECIPE


def test_aoi_recipe_applies_class_two_rule():
    logits, y = make_logits(n=300)
    stk = Stacker(recipe="aoi", n_trials=10).fit(logits, y)
    assert stk.thresholds_.rules_ == {2: 0.4}
    proba = stk.predict_proba(logits)
    pred = stk.predict(logits)
    assert (pred[proba[:, 2] > 0.4] == 2).all()


def test_hill_climb_and_custom_recipes():
    logits, y = make_logits(n=300)
    assert Stacker(recipe="hill_climb").fit(logits, y).report_["step"].tolist()[-1] == "hill_climbing"
    custom = Stacker(recipe=None, stages={"vote": SoftVoting("equal"), "hc": HillClimbing(n_iter=5),
                                          "lr": MetaLearner("logreg")},
                     blend="optuna", calibrate=True, thresholds=ClassThresholds(optimize="accuracy"), n_trials=10)
    custom.fit(logits, y)
    assert set(custom.blender_.weights_) == {"vote", "hc", "lr"}
    assert custom.report_["step"].tolist()[-3:] == ["blend", "+temperature", "+thresholds"]


def test_recipe_errors():
    logits, y = make_logits(n=120)
    with pytest.raises(ValidationError, match="Unknown recipe 'kaggle'"):
        Stacker(recipe="kaggle").fit(logits, y)
    with pytest.raises(ValidationError, match="either recipe"):
        Stacker(recipe="aoi", stages={"v": SoftVoting()}).fit(logits, y)
    with pytest.raises(ValidationError, match="recipe=None needs stages"):
        Stacker(recipe=None).fit(logits, y)
    with pytest.raises(ValidationError, match="at least 2 models"):
        Stacker(recipe="aoi").fit({"m0": logits["m0"]}, y)


def test_from_store_keeps_studies_in_store(tmp_path):
    logits, y = make_logits(n=300)
    store = _store(tmp_path, logits, y)
    stk = Stacker.from_store(store, recipe="aoi", n_trials=8)
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
    a = Stacker(recipe="aoi", n_trials=5).fit(logits, y)
    b = Stacker(recipe="aoi", n_trials=5).fit(logits, y)
    assert a.study_names_ == b.study_names_
    c = Stacker(recipe="aoi", n_trials=5, metric="accuracy").fit(logits, y)
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
    stk = Stacker(recipe=None, stages={"vote": SoftVoting("equal")}, thresholds=ClassThresholds(optimize="accuracy"),
                  metric="accuracy").fit(logits, y, folds=folds)
    last = stk.report_.iloc[-1]
    assert last["step"] == "+thresholds (rejected: worse on held-out folds)"
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
def test_default_recipe_keeps_every_class_column_and_warns(fast_yandex, caplog, where):
    logits, y, folds = _absent_class_inputs()
    if where == "absent everywhere":
        y, folds = np.where(y == 2, 1, y), np.arange(120) % 4
    stk = Stacker(n_trials=8).fit(logits, y, folds=folds)
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
