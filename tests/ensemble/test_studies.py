"""Optuna studies read right: the metric as it is, in its own direction; names that say what was
tuned; and the trials a reused study really holds."""

from __future__ import annotations

import logging
import re

import numpy as np
import optuna
import pytest

from ensemble_kit import Blender, HillClimbing, SoftVoting, Stacker
from ensemble_kit.ensemble import _optuna, blending, voting
from ensemble_kit.ensemble._optuna import best_trial, models_label, run_study, study_direction
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import Metric, get_metric


def _data(n: int = 240, names: tuple[str, ...] = ("m0", "m1", "m2")):
    rng = np.random.default_rng(7)
    y = np.arange(n) % 4
    logits = {name: np.eye(4)[y] * (0.4 + 0.4 * i) + rng.normal(size=(n, 4)) for i, name in enumerate(names)}
    return logits, y, np.arange(n) % 3


def _studies(storage: str) -> dict[str, optuna.Study]:
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro"])
def test_label_metric_studies_maximise_the_metric_as_it_is(tmp_path, metric):
    logits, y, folds = _data()
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    vote = SoftVoting("optuna", metric=metric, n_trials=8, storage=storage).fit(logits, y, folds=folds)
    blend = Blender([("vote", SoftVoting("equal")), ("hc", HillClimbing(n_iter=5))], metric=metric, n_trials=8,
                    storage=storage).fit(logits, y, folds=folds)
    studies = _studies(storage)
    assert set(vote.study_names_) | set(blend.study_names_) == set(studies)
    score = get_metric(metric)
    for name, study in studies.items():
        assert study.direction == optuna.study.StudyDirection.MAXIMIZE, name
        values = [t.value for t in study.trials]
        assert all(0.0 <= v <= 1.0 for v in values), (name, values)  # the metric itself, not its negation
        assert best_trial(study).value == max(values)
        assert study.trials[0].params == {k: 1.0 for k in study.trials[0].params}  # enqueued equal weights first
    # the final study's best trial gives the fitted weights, scored as the study says
    final = studies[vote.study_names_[0]]
    mixed = voting.combine(voting.log_softmax(np.stack(list(logits.values()))), vote.weights_, "probs")
    assert score(y, mixed, kind="logits") == pytest.approx(best_trial(final).value, abs=1e-12)


def test_log_loss_studies_minimise_and_start_from_the_exact_optimum(tmp_path):
    logits, y, folds = _data()
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    vote = SoftVoting("optuna", metric="log_loss", n_trials=8, storage=storage).fit(logits, y, folds=folds)
    for name, study in _studies(storage).items():
        assert study.direction == optuna.study.StudyDirection.MINIMIZE, name
        assert best_trial(study).number == 0  # the enqueued EM optimum is never beaten
    assert study_direction("log_loss") == "minimize" and study_direction("accuracy") == "maximize"
    assert vote.weights_.sum() == pytest.approx(1.0)


def _old_objectives(monkeypatch):
    """The code before studies maximised: label metrics minimised as their negation (``Metric.loss``),
    and Optuna's own best trial."""
    def negated(name):
        metric = get_metric(name)
        if not metric.greater_is_better:
            return metric
        return Metric(metric.name, lambda *a, **k: -metric.fn(*a, **k), greater_is_better=False,
                      of_labels=metric.of_labels)

    for module in (voting, blending):
        monkeypatch.setattr(module, "get_metric", negated)
        monkeypatch.setattr(module, "study_direction", lambda metric: "minimize")
        monkeypatch.setattr(module, "best_trial", lambda study: study.best_trial)


def test_maximising_gives_the_weights_minimising_the_negation_gave(tmp_path, monkeypatch):
    """Same seed, same data: the same trials, the same fitted weights and the same honest (nested)
    scores as when label metrics were minimised as their negation. TPE splits trials by rank, and
    ranking -a ascending is ranking a descending; ties keep their order either way. On a database
    too, where Optuna's own best trial left ties to the database's row order."""
    logits, y, folds = _data()

    def fit(tag: str):
        url = f"sqlite:///{tmp_path / f'{tag}.db'}"
        vote = SoftVoting("optuna", metric="accuracy", n_trials=30, storage=url).fit(logits, y, folds=folds)
        stages = [("vote", SoftVoting("optuna", metric="f1_macro", n_trials=25)), ("hc", HillClimbing(n_iter=10))]
        stack = Stacker(stages, metric="f1_macro", n_trials=25).fit(logits, y, folds=folds)
        return vote, stack

    new_vote, new_stack = fit("new")
    with monkeypatch.context() as patch:
        _old_objectives(patch)
        old_vote, old_stack = fit("old")
    np.testing.assert_array_equal(new_vote.weights_, old_vote.weights_)
    np.testing.assert_array_equal(new_vote.oof_proba_, old_vote.oof_proba_)
    assert new_stack.ensemble_.weights_ == old_stack.ensemble_.weights_
    np.testing.assert_array_equal(new_stack.ensemble_.stages_["vote"].weights_,
                                  old_stack.ensemble_.stages_["vote"].weights_)
    np.testing.assert_array_equal(new_stack.oof_proba_, old_stack.oof_proba_)
    np.testing.assert_array_equal(new_stack.oof_labels_, old_stack.oof_labels_)
    cols = ["accuracy", "f1_macro", "log_loss"]
    np.testing.assert_array_equal(new_stack.report_[cols].to_numpy(), old_stack.report_[cols].to_numpy())


def test_a_study_maximising_f_samples_what_one_minimising_minus_f_samples():
    def f(trial: optuna.Trial) -> float:  # a step function: many ties, as accuracy has
        return round(1 - (trial.suggest_float("x", -2, 2) - 0.5) ** 2 - trial.suggest_float("y", 0.01, 1, log=True), 1)

    up = run_study("up", f, n_trials=40, seed=3, storage=None, direction="maximize", enqueue=[{"x": 0.0, "y": 0.5}])
    down = run_study("down", lambda t: -f(t), n_trials=40, seed=3, storage=None, enqueue=[{"x": 0.0, "y": 0.5}])
    assert [t.params for t in up.trials] == [t.params for t in down.trials]
    assert best_trial(up).number == best_trial(down).number == down.best_trial.number


def test_ties_go_to_the_earliest_trial_on_every_storage(tmp_path):
    values = iter([0.5, 0.7, 0.7, 0.2, 0.7])
    study = run_study("ties", lambda t: (t.suggest_float("x", 0, 1), next(values))[1], n_trials=5, seed=0,
                      storage=f"sqlite:///{tmp_path / 'db.sqlite'}", direction="maximize")
    assert best_trial(study).number == 1


def test_a_study_name_reused_with_the_other_direction_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    optuna.create_study(study_name="s", storage=url, direction="minimize")
    with pytest.raises(ValidationError, match="tuned to minimize, not to maximize"):
        run_study("s", lambda t: t.suggest_float("x", 0, 1), n_trials=2, seed=0, storage=url, direction="maximize")
    with pytest.raises(ValidationError, match="direction must be"):
        run_study("t", lambda t: 0.0, n_trials=1, seed=0, storage=None, direction="max")


_NAME = re.compile(r"(?P<stage>.+)-(?P<metric>log_loss|accuracy|f1_macro)-(?P<models>[^-]+)-(?P<digest>[0-9a-f]{12})-"
                   r"(?P<fold>final|fold\d+)")


def test_study_names_say_stage_metric_models_and_fold():
    logits, y, folds = _data()
    vote = SoftVoting("optuna", metric="accuracy", n_trials=3).fit(logits, y, folds=folds)
    parsed = [_NAME.fullmatch(n).groupdict() for n in vote.study_names_]
    assert [p["fold"] for p in parsed] == ["final", "fold0", "fold1", "fold2"]
    assert {(p["stage"], p["metric"], p["models"]) for p in parsed} == {("soft_vote-probs", "accuracy", "m0+m1+m2")}
    assert len({p["digest"] for p in parsed}) == 1  # one fit: its studies sort together
    blend = Blender([("vote", SoftVoting("equal")), ("hc", HillClimbing(n_iter=5))], metric="f1_macro",
                    n_trials=3).fit(logits, y, folds=folds)
    parsed = [_NAME.fullmatch(n).groupdict() for n in blend.study_names_]
    assert {(p["stage"], p["metric"], p["models"]) for p in parsed} == {("blend", "f1_macro", "m0+m1+m2")}
    assert sorted(p["fold"] for p in parsed) == ["final", "fold0", "fold1", "fold2"]
    # deterministic, and the same logits under other model names are another study
    again = SoftVoting("optuna", metric="accuracy", n_trials=3).fit(logits, y, folds=folds)
    assert again.study_names_ == vote.study_names_
    renamed = SoftVoting("optuna", metric="accuracy", n_trials=3).fit(
        {f"x{k}": v for k, v in zip(range(3), logits.values())}, y, folds=folds)
    assert not set(renamed.study_names_) & set(vote.study_names_)


def test_many_or_unusual_model_names_are_counted_and_hashed():
    long_names = [f"convnext_tiny_fold_model_{i}" for i in range(9)]
    assert re.fullmatch(r"9models\.[0-9a-f]{6}", models_label(long_names))
    assert models_label(long_names) == models_label(list(long_names))
    assert models_label(long_names) != models_label(long_names[::-1])
    assert re.fullmatch(r"2models\.[0-9a-f]{6}", models_label(["a-b", "c d"]))  # never a '-' or space inside
    logits, y, folds = _data(names=("model with spaces", "m-1", "m/2"))
    vote = SoftVoting("optuna", metric="log_loss", n_trials=2).fit(logits, y, folds=folds)
    assert all(_NAME.fullmatch(n) for n in vote.study_names_), vote.study_names_
    with pytest.raises(ValidationError, match="at most 512 characters"):
        SoftVoting("optuna", n_trials=2, study_name="x" * 600).fit(logits, y, folds=folds)


def test_a_reused_study_records_the_trials_it_really_has(tmp_path, caplog):
    logits, y, folds = _data()
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    first = SoftVoting("optuna", metric="accuracy", n_trials=10, storage=storage).fit(logits, y, folds=folds)
    assert {s.user_attrs["n_trials"] for s in _studies(storage).values()} == {10}
    with caplog.at_level(logging.INFO, logger=_optuna.__name__):
        fewer = SoftVoting("optuna", metric="accuracy", n_trials=4, storage=storage).fit(logits, y, folds=folds)
    assert fewer.study_names_ == first.study_names_  # n_trials is not part of the name: reused
    np.testing.assert_array_equal(fewer.weights_, first.weights_)
    for study in _studies(storage).values():  # 10 trials, not the 4 this fit asked for
        assert study.user_attrs["n_trials"] == 10 == len(study.trials)
    assert "reused with its 10 completed trials (this fit asked for 4)" in caplog.text
    more = SoftVoting("optuna", metric="accuracy", n_trials=15, storage=storage).fit(logits, y, folds=folds)
    assert more.study_names_ == first.study_names_
    for study in _studies(storage).values():  # resumed from its 10 to 15
        assert study.user_attrs["n_trials"] == 15 == len(study.trials)
