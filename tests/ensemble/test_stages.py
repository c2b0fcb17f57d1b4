import numpy as np
import pytest

from helpers import FAST_GBM, make_logits
from ensemble_kit import Blender, HillClimbing, MetaLearner, SoftVoting
from ensemble_kit.ensemble._features import classwise_rows
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import log_loss


def test_soft_vote_weights_follow_model_quality():
    logits, y = make_logits(n=600, strength=(0.0, 0.5, 3.0))
    sv = SoftVoting(n_trials=60).fit(logits, y)
    assert sv.weights_.argmax() == 2 and sv.weights_[2] > 0.5
    assert np.isclose(sv.weights_.sum(), 1.0)
    assert log_loss(y, sv.oof_proba_, kind="probs") < log_loss(y, np.exp(logits["m1"]) / np.exp(logits["m1"]).sum(1, keepdims=True), kind="probs")
    prefix = sv.study_names_[0].rsplit("-", 1)[0]
    assert prefix.startswith("soft_vote-probs-log_loss-")
    assert sv.study_names_ == [f"{prefix}-final"] + [f"{prefix}-fold{k}" for k in range(5)]


def test_soft_vote_fixed_equal_and_logit_space():
    logits, y = make_logits()
    np.testing.assert_allclose(SoftVoting("equal").fit(logits, y).weights_, 1 / 3)
    fixed = SoftVoting([1, 0, 3], space="logits").fit(logits, y)
    np.testing.assert_allclose(fixed.weights_, [0.25, 0.0, 0.75])
    with pytest.raises(ValidationError, match="non-negative"):
        SoftVoting([1, -1, 1]).fit(logits, y)
    with pytest.raises(ValidationError, match="weights must be 'optuna', 'equal'"):
        SoftVoting("best").fit(logits, y)


def test_per_model_temperature_puts_models_on_one_scale():
    logits, y = make_logits(n=600)
    mixed = dict(logits, m0=logits["m0"] * 10)  # the weakest model is also 10x over-confident
    plain = SoftVoting("equal", space="logits").fit(mixed, y)
    tempered = SoftVoting("equal", space="logits", temperature=True).fit(mixed, y)
    assert tempered.temperatures_[0] > 5 and (tempered.temperatures_[1:] < 3).all()
    assert log_loss(y, tempered.oof_proba_, kind="probs") < log_loss(y, plain.oof_proba_, kind="probs") - 1.0


def test_soft_vote_studies_persist_and_resume(tmp_path):
    logits, y = make_logits()
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    first = SoftVoting(n_trials=10, storage=storage).fit(logits, y)
    import optuna

    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert set(first.study_names_) <= names and len(names) == 5 + 1  # 5 folds + final
    again = SoftVoting(n_trials=10, storage=storage).fit(logits, y)
    np.testing.assert_allclose(again.weights_, first.weights_)  # reused: no new trials
    study = optuna.load_study(study_name=first.study_names_[0], storage=storage)
    assert len(study.trials) == 10


def test_hill_climbing_picks_the_best_and_bagging():
    logits, y = make_logits(n=600, strength=(0.0, 0.5, 3.0))
    hc = HillClimbing(n_iter=30).fit(logits, y)
    assert hc.weights_.argmax() == 2
    assert hc.trajectory_ == sorted(hc.trajectory_, reverse=True)[: len(hc.trajectory_)] or hc.trajectory_[-1] <= hc.trajectory_[0]
    bagged = HillClimbing(n_iter=10, bagging=8, seed=1).fit(logits, y)
    assert np.isclose(bagged.weights_.sum(), 1.0) and bagged.weights_[2] > 0
    with pytest.raises(ValidationError, match="init must be"):
        HillClimbing(init="worst").fit(logits, y)


def test_hill_climbing_log_loss_trajectory_is_the_mixtures_log_loss():
    from ensemble_kit.ensemble.voting import combine
    from ensemble_kit.metrics import log_softmax

    logits, y = make_logits(n=500, n_classes=12, n_models=4, strength=(0.5, 1.0, 1.5, 2.0))
    stacked = np.stack(list(logits.values()))
    for n_iter in (1, 3, 12):
        hc = HillClimbing(n_iter=n_iter).fit(logits, y)
        mixed = combine(log_softmax(stacked), hc.weights_, "probs")
        assert hc.trajectory_[-1] == pytest.approx(log_loss(y, mixed, kind="logits"), abs=1e-6)


@pytest.mark.parametrize("layout", ["wide", "classwise"])
def test_meta_learner_layouts_learn(layout):
    logits, y = make_logits(n=600)
    meta = MetaLearner("lightgbm", layout=layout, params=FAST_GBM).fit(logits, y)
    assert meta.layout_ == layout
    mean = np.mean([log_loss(y, v, kind="logits") for v in logits.values()])
    assert log_loss(y, meta.oof_proba_, kind="probs") < mean


def test_auto_layout_switches_to_classwise_for_many_classes():
    logits, y = make_logits(n=900, n_classes=30)
    meta = MetaLearner("lightgbm", max_candidates=5, params=FAST_GBM).fit(logits, y)
    assert meta.layout_ == "classwise"
    proba = meta.predict_proba(logits)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    rows = classwise_rows(np.stack(list(logits.values())).astype(np.float32), "logprobs", 5)
    assert rows.candidates.shape == (900, 5) and rows.features.shape[0] == 900 * 5
    # classes outside the candidates keep the plain-mean probability
    outside = np.ones((900, 30), bool)
    np.put_along_axis(outside, rows.candidates, False, axis=1)
    np.testing.assert_allclose(np.log(proba[outside]), rows.ensemble_log_probs[outside], rtol=1e-3, atol=1e-4)


def test_logreg_fits_wide_rows_unscaled_and_classwise_rows_standardised():
    from ensemble_kit.ensemble._features import wide_features

    logits, y = make_logits(n=600)
    wide = MetaLearner("logreg", layout="wide").fit(logits, y)
    scaler, lr = (step for _, step in wide.models_[0].steps)
    assert not scaler.with_mean and not scaler.with_std and scaler.mean_ is None
    assert lr.solver == "newton-cholesky"        # 600 rows x 45 coefficients: far below the Newton limit
    X = wide_features(np.stack(list(logits.values())), "logprobs")
    z = X @ lr.coef_.T + lr.intercept_           # the coefficients act on the raw log-probabilities
    np.testing.assert_allclose(wide.predict_proba(logits), np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True)),
                               atol=1e-6)
    many, y_many = make_logits(n=900, n_classes=30)
    classwise = MetaLearner("logreg", max_candidates=5).fit(many, y_many)
    scaler, lr = (step for _, step in classwise.models_[0].steps)
    assert classwise.layout_ == "classwise" and scaler.with_mean and scaler.mean_ is not None
    assert lr.solver == "lbfgs"


def test_logreg_solver_is_newton_below_the_work_limit_lbfgs_above():
    from ensemble_kit.ensemble._learners import _NEWTON_CHOLESKY_MAX_WORK, _logreg_solver

    assert _logreg_solver(5_000, 48, 10) == "newton-cholesky"      # 4 models x 10 classes (cnn_family)
    assert _logreg_solver(40_000, 108, 10) == "lbfgs"              # 9 models x 10 classes (CIFAR-10 bundle)
    assert _logreg_solver(1_000_000, 6, 2) == "newton-cholesky"    # two classes: one coefficient per feature
    limit_rows = int(_NEWTON_CHOLESKY_MAX_WORK // (48 * 10) ** 2)
    assert _logreg_solver(limit_rows, 48, 10) == "newton-cholesky" and _logreg_solver(limit_rows + 1, 48, 10) == "lbfgs"


def test_a_wide_stack_too_large_for_newton_is_standardised_for_lbfgs(monkeypatch):
    import ensemble_kit.ensemble._learners as learners

    logits, y = make_logits(n=600, strength=(1.0, 1.3, 1.6))
    monkeypatch.setattr(learners, "_NEWTON_CHOLESKY_MAX_WORK", 1.0)  # every stack is "too large" for Newton
    auto = MetaLearner("logreg", layout="wide", params={"C": 0.1}).fit(logits, y)
    scaler, lr = (step for _, step in auto.models_[0].steps)
    assert lr.solver == "lbfgs" and scaler.with_mean and scaler.with_std
    assert scaler.mean_.shape == (3 * 3 + 2 * 3,)
    given = MetaLearner("logreg", layout="wide", params={"C": 0.1, "solver": "lbfgs"}).fit(logits, y)
    scaler, lr = (step for _, step in given.models_[0].steps)
    assert lr.solver == "lbfgs" and not scaler.with_mean and scaler.mean_ is None  # a given solver: as before
    assert not np.allclose(auto.oof_proba_, given.oof_proba_, atol=1e-4)  # standardising changes the penalty


def test_logreg_solvers_agree_and_a_given_solver_or_scaling_is_kept():
    logits, y = make_logits(n=600, strength=(1.0, 1.3, 1.6))
    newton = MetaLearner("logreg", layout="wide", params={"C": 0.1}).fit(logits, y)
    lbfgs = MetaLearner("logreg", layout="wide", params={"C": 0.1, "solver": "lbfgs"}).fit(logits, y)
    assert newton.models_[0].steps[-1][1].solver == "newton-cholesky" and lbfgs.models_[0].steps[-1][1].solver == "lbfgs"
    np.testing.assert_allclose(newton.oof_proba_, lbfgs.oof_proba_, atol=2e-3)  # the same optimum, reached faster
    scaled = MetaLearner("logreg", layout="wide", params={"standardscaler__with_mean": True,
                                                          "standardscaler__with_std": True}).fit(logits, y)
    assert scaled.models_[0].steps[0][1].mean_.shape == (3 * 3 + 2 * 3,)


def test_logreg_C_is_the_mean_of_the_inner_folds_best_values():
    """The documented rule (docs/stacking.md): each inner fold's best grid C, averaged, as
    LogisticRegressionCV(refit=False) gives it, so C can fall between grid points."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    from ensemble_kit.ensemble._features import wide_features
    from ensemble_kit.ensemble._learners import LOGREG_CS, _LogReg

    grid = np.asarray(LOGREG_CS)
    fold_scores = np.full((3, len(grid)), -1.0)
    fold_scores[[0, 1, 2], [2, 2, 4]] = -0.5             # best values: C = grid[2], grid[2], grid[4]
    assert _LogReg._choose_C(fold_scores) == pytest.approx((2 * grid[2] + grid[4]) / 3)
    logits, y = make_logits(n=600, strength=(1.0, 1.3, 1.6))
    meta = MetaLearner("logreg", layout="wide", seed=3).fit(logits, y)
    X = wide_features(np.stack(list(logits.values())), "logprobs")
    splits = list(StratifiedKFold(3, shuffle=True, random_state=3).split(X, y))
    search = LogisticRegressionCV(Cs=list(grid), cv=splits, scoring="neg_log_loss", solver="newton-cholesky",
                                  refit=False, l1_ratios=(0.0,), use_legacy_attributes=False).fit(X, y)
    assert meta.models_[0].steps[-1][1].C == pytest.approx(float(np.atleast_1d(search.C_)[0]))


def test_meta_learner_bad_params(logits_y):
    logits, y = logits_y
    with pytest.raises(ValidationError, match=r"Unknown meta-learner backend 'xgboost'.*\['catboost', 'lightgbm', 'logreg'\]"):
        MetaLearner("xgboost").fit(logits, y)
    with pytest.raises(ValidationError, match="layout must be one of"):
        MetaLearner(layout="tall").fit(logits, y)
    with pytest.raises(ValidationError, match="features must be one of"):
        MetaLearner("logreg", features="ranks").fit(logits, y)


def test_blender_fixed_weights_mix_stage_oof(logits_y):
    logits, y = logits_y
    stages = [("vote", SoftVoting("equal")), ("hill", HillClimbing(n_iter=5))]
    blend = Blender(stages, weights={"vote": 0.25, "hill": 0.75}).fit(logits, y)
    expected = 0.25 * blend.stage_oof_["vote"] + 0.75 * blend.stage_oof_["hill"]
    np.testing.assert_allclose(blend.oof_proba_, expected / expected.sum(1, keepdims=True), atol=1e-6)
    with pytest.raises(ValidationError, match=r"stages \['lgbm'\] that do not exist"):
        Blender(stages, weights={"lgbm": 1.0}).fit(logits, y)
    with pytest.raises(ValidationError, match=r"list of \(name, ensembler\) pairs"):
        Blender({"vote": SoftVoting()}).fit(logits, y)


def test_blender_optuna_weights(logits_y):
    logits, y = logits_y
    stages = [("good", SoftVoting([0, 0, 1])), ("bad", SoftVoting([1, 0, 0]))]
    blend = Blender(stages, n_trials=25).fit(logits, y)  # weights="optuna" by default
    assert blend.weights_["good"] > blend.weights_["bad"]
    assert np.isclose(sum(blend.weights_.values()), 1.0)


def test_mixture_log_loss_equals_the_log_loss_of_the_mixed_probabilities():
    from ensemble_kit.ensemble.blending import mix
    from ensemble_kit.ensemble.voting import mixture_log_loss
    from ensemble_kit.metrics import log_softmax

    rng = np.random.default_rng(0)
    y = rng.integers(0, 50, 400)
    probs = {f"s{i}": np.exp(log_softmax(rng.normal(size=(400, 50)) * (i + 1))) for i in range(3)}
    loss = mixture_log_loss(np.stack([p[np.arange(400), y] for p in probs.values()]))
    for weights in ([0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [3.0, 1.0, 1.0]):
        expected = log_loss(y, mix(probs, dict(zip(probs, weights))), kind="logits")
        assert loss(np.array(weights)) == pytest.approx(expected, abs=1e-9)


def test_mixture_optimum_is_the_minimum_of_the_mixture_log_loss():
    from scipy.optimize import minimize

    from ensemble_kit.ensemble.voting import mixture_log_loss, mixture_optimum

    rng = np.random.default_rng(1)
    true_probs = rng.beta(2.0, 1.0 + 3.0 * rng.random((5, 1)), size=(5, 3000))
    true_probs[4] = true_probs[0]  # a duplicate member: the optimum is not unique, its loss is
    loss = mixture_log_loss(true_probs)
    weights = mixture_optimum(true_probs)
    assert weights.shape == (5,) and weights.min() >= 0 and weights.sum() == pytest.approx(1.0)
    reference = minimize(lambda z: loss(np.exp(z)), np.zeros(5), method="Nelder-Mead",
                         options={"maxiter": 20000, "xatol": 1e-10, "fatol": 1e-12})
    assert loss(weights) <= reference.fun + 1e-8
    for corner in np.eye(5):
        assert loss(weights) < loss(corner)


def test_mixture_optimum_gives_a_useless_member_no_weight():
    from ensemble_kit.ensemble.voting import mixture_optimum

    rng = np.random.default_rng(2)
    good = rng.uniform(0.6, 1.0, 2000)
    useless = np.full(2000, 0.1)  # never more likely than the good member on any row
    weights = mixture_optimum(np.stack([good, useless]))
    assert weights[1] < 1e-3


def test_log_loss_weight_studies_start_from_the_exact_optimum(logits_y):
    """The soft vote and the blend enqueue the mixture's optimum: with a budget of one trial they
    reach it, and with more they never end above it."""
    from ensemble_kit.ensemble.voting import mixture_log_loss, mixture_optimum
    from ensemble_kit.metrics import log_softmax

    logits, y = logits_y
    true_probs = np.stack([np.exp(log_softmax(np.asarray(v, dtype=np.float64)))[np.arange(len(y)), y]
                           for v in logits.values()])
    optimum = mixture_log_loss(true_probs)(mixture_optimum(true_probs))
    for n_trials in (1, 12):
        vote = SoftVoting(n_trials=n_trials).fit(logits, y)
        got = mixture_log_loss(true_probs)(vote.weights_)
        assert got == pytest.approx(optimum, abs=2e-3) and got >= optimum - 1e-9
    stages = [("good", SoftVoting([0, 0, 1])), ("bad", SoftVoting([1, 0, 0]))]
    one_trial = Blender(stages, n_trials=1).fit(logits, y)
    assert one_trial.weights_["good"] > 0.5


def test_blender_fits_as_a_fold_clone(logits_y):
    from sklearn.base import clone

    logits, y = logits_y
    stages = [("vote", SoftVoting("equal")), ("hill", HillClimbing(n_iter=5))]
    parent = Blender(stages, weights={"vote": 0.5, "hill": 0.5}).fit(logits, y)
    fold = parent._fold_clone(0)
    stacked = np.stack(list(logits.values())).astype(np.float32)
    fold._fit_prepared(stacked[:, :160], y[:160], parent.folds_[:160])
    proba = np.exp(fold._predict_prepared(stacked[:, 160:]))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert set(fold.stages_) == {"vote", "hill"}


def test_blend_study_is_keyed_on_its_stages_predictions(tmp_path):
    """A stage that changes (here: its regularisation) must not reuse the blend study tuned on the
    old stage's predictions from the same storage."""
    from ensemble_kit import Blender, MetaLearner, SoftVoting

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    logits = {f"m{i}": np.eye(3)[y] * (1 + i) + rng.normal(size=(300, 3)) * 2 for i in range(3)}
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def blend(c):
        return Blender([("lr", MetaLearner("logreg", layout="wide", params={"C": c})), ("vote", SoftVoting("equal"))],
                       n_trials=10, storage=storage).fit(logits, y)

    first, changed, again = blend(1.0), blend(0.001), blend(1.0)
    assert set(first.study_names_).isdisjoint(changed.study_names_)
    assert again.study_names_ == first.study_names_ and again.weights_ == first.weights_


def test_blender_tempers_a_well_ranked_but_overconfident_stage():
    """A linear pool weighs stages by their calibrated quality: the most accurate stage, made 6x
    over-confident, gets a temperature above 1 and most of the weight, and the blend beats both
    untempered stages."""
    from ensemble_kit.ensemble.blending import mix
    from ensemble_kit.metrics import log_loss

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    sharp = (np.eye(4)[y] * 2.5 + rng.normal(size=(600, 4))) * 6
    soft = np.eye(4)[y] * 0.8 + rng.normal(size=(600, 4))
    logits = {"sharp": sharp, "soft": soft}
    blend = Blender([("sharp", SoftVoting([1, 0])), ("soft", SoftVoting([0, 1]))], n_trials=20).fit(logits, y)
    assert blend.temperatures_["sharp"] > 1.5 and 0.5 < blend.temperatures_["soft"] < 1.5
    assert blend.weights_["sharp"] > 0.5
    untempered = {n: log_loss(y, p, kind="probs") for n, p in blend.stage_oof_.items()}
    assert log_loss(y, blend.oof_proba_, kind="probs") < min(untempered.values()) - 0.1
    stacked = np.stack([sharp, soft]).astype(np.float32)
    expected = mix(blend.stage_proba(logits), blend.weights_, blend.temperatures_)
    np.testing.assert_allclose(blend._predict_prepared(stacked), expected, atol=1e-5)
    fixed = Blender([("sharp", SoftVoting([1, 0])), ("soft", SoftVoting([0, 1]))], weights={"sharp": 1, "soft": 1})
    assert fixed.fit(logits, y).temperatures_ == {"sharp": 1.0, "soft": 1.0}  # fixed blends mix stages as they are


def test_bagged_boosted_stages_average_seeded_fits_and_beat_one_fit():
    logits, y = make_logits(n=400)
    bagged = MetaLearner("lightgbm", params=FAST_GBM, n_bags=3).fit(logits, y)
    single = MetaLearner("lightgbm", params=FAST_GBM).fit(logits, y)
    assert len(bagged.models_) == 3 and len(bagged.n_iterations_) == 3 and len(single.models_) == 1
    # bag b is the single fit with seed + b: bag 0 is exactly the unbagged model
    one = MetaLearner("lightgbm", params=FAST_GBM)
    per_bag = []
    for b in range(3):
        one.set_params(seed=b).fit(logits, y)
        per_bag.append(one.predict_proba(logits))
    np.testing.assert_allclose(per_bag[0], single.predict_proba(logits), atol=1e-9)
    np.testing.assert_allclose(bagged.predict_proba(logits), np.mean(per_bag, axis=0), atol=1e-9)
    assert np.abs(per_bag[1] - per_bag[0]).max() > 1e-3  # the seeds differ (subsampling, early-stopping rows)
    assert log_loss(y, bagged.oof_proba_, kind="probs") < log_loss(y, single.oof_proba_, kind="probs")


def test_every_fold_fit_bags_like_the_final_fit(monkeypatch):
    from ensemble_kit.ensemble import _learners

    logits, y = make_logits(n=400)
    seeds = []
    real_fit = _learners._LightGBM.fit
    monkeypatch.setattr(_learners._LightGBM, "fit", lambda self, r: seeds.append(r.seed) or real_fit(self, r))
    MetaLearner("lightgbm", params=FAST_GBM, seed=7, n_bags=3).fit(logits, y)
    assert seeds == [7, 8, 9] * 6  # 5 fold fits (the honest OOF) and the final one


@pytest.mark.parametrize("n_bags", [0, -1, 2.5, True, "auto"])
def test_a_bad_bag_count_is_refused(n_bags):
    logits, y = make_logits()
    with pytest.raises(ValidationError, match="n_bags must be a positive integer"):
        MetaLearner("lightgbm", params=FAST_GBM, n_bags=n_bags).fit(logits, y)


def test_newton_handing_a_near_separable_stack_to_lbfgs_raises_no_warning():
    import warnings

    from scipy.linalg import LinAlgWarning
    from sklearn.linear_model import LogisticRegression

    from ensemble_kit.ensemble._features import wide_features

    logits, y = make_logits(n=300, n_classes=10, strength=(4.0, 5.0, 6.0))  # near-separable: good models
    features = wide_features(np.stack(list(logits.values())).astype(np.float32), "logprobs")
    with pytest.warns(LinAlgWarning, match="NewtonCholeskySolver"):  # the control: the data hits the fallback
        LogisticRegression(C=10.0, solver="newton-cholesky", max_iter=100).fit(features, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinAlgWarning)
        meta = MetaLearner("logreg").fit(logits, y)
    assert meta.models_[0].steps[-1][1].solver == "newton-cholesky"
    assert log_loss(y, meta.oof_proba_, kind="probs") < min(log_loss(y, v, kind="logits") for v in logits.values())
