"""A fitted Stacker is a folder you can reload: same predictions in a fresh process, no code run."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ensemble_kit import MetaLearner, SoftVoting, Stacker
from ensemble_kit.errors import ArtifactError
from helpers import FAST_CATBOOST, FAST_GBM, make_logits, reseal

FAST = {"catboost__params": FAST_CATBOOST, "lightgbm__params": FAST_GBM}
CASES = [  # recipe, classes (3: wide meta-learners, 25: class-wise), metric (probabilities or labels)
    ("full", 3, "log_loss"), ("full", 3, "f1_macro"), ("full", 25, "log_loss"), ("yandex", 3, "accuracy"),
    ("yandex", 25, "f1_macro"), ("aoi", 3, "accuracy"), ("hill_climb", 3, "log_loss"), ("hill_climb", 25, "f1_macro"),
]


def _fit(recipe, n_classes, metric):
    logits, y = make_logits(n=300 if n_classes == 3 else 500, n_classes=n_classes, strength=(1.5, 2.5, 3.5))
    stk = Stacker.from_recipe(recipe, metric=metric, n_trials=6)
    if recipe in ("full", "yandex"):
        stk.set_params(**FAST)
    return stk.fit(logits, y)


def test_reloaded_stacks_predict_the_same_in_a_fresh_process(tmp_path):
    rng = np.random.default_rng(1)
    expected = {}
    for i, (recipe, n_classes, metric) in enumerate(CASES):
        stk = _fit(recipe, n_classes, metric)
        unseen = {name: rng.normal(size=(40, n_classes)) * 2 for name in stk.model_names_}
        stk.save(tmp_path / f"stack{i}")
        np.savez(tmp_path / f"unseen{i}.npz", **unseen)
        expected[i] = (stk.predict_proba(unseen), stk.predict(unseen))
        layouts = {getattr(s, "layout_", None) for s in getattr(stk.ensemble_, "stages_", {}).values()} - {None}
        if recipe == "full":
            assert layouts == ({"wide"} if n_classes == 3 else {"classwise"})
    code = textwrap.dedent("""
        import sys, numpy as np
        from ensemble_kit import Stacker
        root, n = sys.argv[1], int(sys.argv[2])
        for i in range(n):
            unseen = dict(np.load(f"{root}/unseen{i}.npz"))
            stk = Stacker.load(f"{root}/stack{i}")
            np.save(f"{root}/proba{i}.npy", stk.predict_proba(unseen))
            np.save(f"{root}/labels{i}.npy", stk.predict(unseen))
    """)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(len(CASES))], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for i, case in enumerate(CASES):
        proba, labels = expected[i]
        assert np.abs(np.load(tmp_path / f"proba{i}.npy") - proba).max() <= 1e-6, case
        np.testing.assert_array_equal(np.load(tmp_path / f"labels{i}.npy"), labels)


def test_saved_stack_is_plain_files_with_native_gbm_models(tmp_path):
    stk = _fit("full", 3, "log_loss")
    folder = stk.save(tmp_path / "s")
    suffixes = sorted({p.suffix for p in folder.iterdir()})
    assert suffixes == [".json", ".npy", ".txt"]  # CatBoost as validated JSON (*.cb.json), LightGBM as text
    assert any(p.name.endswith(".cb.json") for p in folder.iterdir())
    document = json.loads((folder / "stack.json").read_text())
    assert document["format"] == "ensemble_kit.stack" and document["version"] == 2
    assert all(record["checksum"].startswith("xxh3_128:") for record in document["files"].values())
    again = Stacker.load(folder)
    assert again.get_params().keys() == stk.get_params().keys() and again.report_.equals(stk.report_)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("fault", ["pickle in place of a model", "unregistered type", "edited weights", "link"])
def test_a_planted_or_edited_stack_never_runs_code_and_is_named(tmp_path, fault):
    import os

    stk = _fit("full", 3, "log_loss")
    folder = stk.save(tmp_path / "s")
    marker = tmp_path / "code-ran"
    manifest = folder / "stack.json"
    document = json.loads(manifest.read_text())
    cbm = next(p for p in folder.iterdir() if p.name.endswith(".cb.json"))
    if fault == "pickle in place of a model":
        cbm.write_bytes(pickle.dumps(_Payload(str(marker))))
    elif fault == "unregistered type":
        document["fitted"]["ensemble"]["type"] = "os.system"
        reseal(folder, document=document)
    elif fault == "edited weights":
        weights = next(p for p in folder.iterdir() if p.name.endswith("soft_vote.weights.npy"))
        np.save(weights, np.array([9.0, 0.0, 0.0]))
    else:
        os.replace(cbm, tmp_path / "elsewhere.cb.json")
        os.symlink(tmp_path / "elsewhere.cb.json", cbm)
    with pytest.raises(ArtifactError) as raised:
        Stacker.load(folder)
    assert str(folder) in str(raised.value) and not marker.exists()


def test_a_stage_with_a_plain_estimator_cannot_be_saved_without_pickle(tmp_path):
    from sklearn.linear_model import LogisticRegression

    logits, y = make_logits(n=200)
    stk = Stacker([("lr", MetaLearner(LogisticRegression(C=0.5))), ("vote", SoftVoting("equal"))], n_trials=5)
    stk.fit(logits, y)
    with pytest.raises(ArtifactError, match="cannot be saved without pickle"):
        stk.save(tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_a_stack_saved_before_blend_temperatures_loads_with_untempered_stages(tmp_path):
    stk = _fit("full", 3, "log_loss")
    folder = stk.save(tmp_path / "stack")
    doc = json.loads((folder / "stack.json").read_text())
    blend_state = doc["fitted"]["ensemble"]["fitted"]
    assert set(blend_state.pop("temperatures")) == set(stk.ensemble_.stages_)
    doc["version"], doc["summary"] = 1, None  # such stacks were format 1: no summary of what was fitted
    reseal(folder, document=doc)
    old = Stacker.load(folder)
    assert old.ensemble_.temperatures_ == {name: 1.0 for name in stk.ensemble_.stages_}
    blend_state["temperatures"] = {name: -1.0 for name in stk.ensemble_.stages_}  # edited: refused by name
    reseal(folder, document=doc)
    with pytest.raises(ArtifactError, match="temperatures"):
        Stacker.load(folder)


def test_a_scaled_logistic_stage_saved_by_an_earlier_version_still_loads(tmp_path):
    """Wide logistic stages were standardised before 2026-12-03: their scaler arrays are saved and used."""
    logits, y = make_logits(n=300)
    scaled = {"standardscaler__with_mean": True, "standardscaler__with_std": True}
    stk = Stacker([("lr", MetaLearner("logreg", params=scaled)), ("vote", SoftVoting("equal"))], n_trials=5).fit(logits, y)
    folder = stk.save(tmp_path / "s")
    assert any(p.name.endswith("standardscaler.mean_.npy") for p in folder.iterdir())
    np.testing.assert_allclose(Stacker.load(folder).predict_proba(logits), stk.predict_proba(logits), atol=1e-6)


def test_a_logistic_stage_missing_a_needed_array_is_refused_by_name(tmp_path):
    logits, y = make_logits(n=300)
    stk = Stacker([("lr", MetaLearner("logreg")), ("vote", SoftVoting("equal"))], n_trials=5).fit(logits, y)
    folder = stk.save(tmp_path / "s")
    assert not any("standardscaler" in p.name for p in folder.iterdir())  # unscaled: no scaler arrays
    document = json.loads((folder / "stack.json").read_text())
    text = json.dumps(document).replace('"with_mean": false', '"with_mean": true')  # claims a scaler it lacks
    reseal(folder, document=json.loads(text))
    with pytest.raises(ArtifactError, match=r"standardscaler\.mean_") as raised:
        Stacker.load(folder)
    assert str(folder) in str(raised.value)


def test_a_bagged_stage_saves_every_bag_and_a_single_model_stage_saved_before_bagging_loads(tmp_path):
    logits, y = make_logits(n=300)
    stk = Stacker([("gbm", MetaLearner("lightgbm", params=FAST_GBM, n_bags=3)), ("vote", SoftVoting("equal"))],
                  n_trials=5)
    stk.fit(logits, y)
    folder = stk.save(tmp_path / "bagged")
    assert len([p for p in folder.iterdir() if p.suffix == ".txt"]) == 3  # one booster per bag
    again = Stacker.load(folder)
    assert len(again.ensemble_.stages_["gbm"].models_) == 3
    np.testing.assert_allclose(again.predict_proba(logits), stk.predict_proba(logits), atol=1e-6)

    single = Stacker([("gbm", MetaLearner("lightgbm", params=FAST_GBM)), ("vote", SoftVoting("equal"))],
                     n_trials=5).fit(logits, y)
    folder = single.save(tmp_path / "single")
    manifest = folder / "stack.json"
    state = json.loads(manifest.read_text())
    found = []

    def old_format(node):  # what a meta-learner's fitted state looked like before bagging
        if isinstance(node, dict):
            if "models" in node and "layout" in node:
                node["model"], node["n_iterations"] = node.pop("models")[0], node["n_iterations"][0]
                found.append(node)
            for value in node.values():
                old_format(value)
        elif isinstance(node, list):
            for value in node:
                old_format(value)

    old_format(state)
    assert len(found) == 1
    reseal(folder, document=state)
    old = Stacker.load(folder)
    assert len(old.ensemble_.stages_["gbm"].models_) == 1
    np.testing.assert_allclose(old.predict_proba(logits), single.predict_proba(logits), atol=1e-6)

    found[0]["models"], found[0]["n_iterations"] = [found[0].pop("model")] * 2, [3]  # edited: counts disagree
    reseal(folder, document=state)
    with pytest.raises(ArtifactError, match="one round count per model") as raised:
        Stacker.load(folder)
    assert str(folder) in str(raised.value)
