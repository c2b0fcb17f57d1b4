import numpy as np
import pandas as pd
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.errors import StoreError, ValidationError
from ensemble_kit.project import (
    ProjectConfig,
    StackConfig,
    fit_stack,
    held_out_labels,
    results_table,
    list_stacks,
    load_stack,
    open_sources,
    submission_frame,
    train_project,
)
from ensemble_kit.project.pipeline import training_order
from helpers import write_images

TINY = {"model": "resnet10t", "img_size": 16, "epochs": 1, "batch_size": 8, "device": "cpu"}


def _folder_data(root, n_per_class=8, labelled_test=True):
    classes = ["cat", "dog", "emu"]
    write_images(root / "train", [(f"{c}/{i}.png", k) for k, c in enumerate(classes) for i in range(n_per_class)])
    if labelled_test:
        write_images(root / "test", [(f"{c}/t{i}.png", k) for k, c in enumerate(classes) for i in range(2)], seed=1)
    else:
        write_images(root / "test", [(f"img{i}.png", i % 3) for i in range(6)], seed=1)
    return classes


def _config(tmp_path, **models):
    return ProjectConfig.from_dict({
        "store": str(tmp_path / "store"),
        "data": {"format": "folder", "root": str(tmp_path / "data"), "train": "train", "test": "test"},
        "folds": {"n_folds": 2, "seed": 0},
        "models": models or {"r10": TINY},
        "stack": {"recipe": "hill_climb", "metric": "log_loss"},
    })


def test_train_project_creates_store_saves_config_and_test_labels(tmp_path):
    _folder_data(tmp_path / "data")
    cfg = _config(tmp_path, r10=TINY, r10b={**TINY, "seed": 1})
    train_project(cfg, folds=[0])
    store = LogitStore(cfg.store)
    assert store.incomplete() == {"r10": (1,), "r10b": (1,)}
    train_project(cfg)
    assert store.models() == ["r10", "r10b"] and store.classes == ["cat", "dog", "emu"]
    assert ProjectConfig.from_yaml(store.path / "project" / "project.yaml") == cfg
    labels = held_out_labels(store)
    assert [store.classes[k] for k in labels] == [str(i).split("/")[0] for i in store.test_ids]
    assert (store.path / "runs" / "r10" / "fold1" / "history.csv").is_file()


def test_reopening_checks_the_store_matches(tmp_path):
    _folder_data(tmp_path / "data")
    cfg = _config(tmp_path)
    train_project(cfg, folds=[0])
    with pytest.raises(ValidationError, match=r"2 folds; the config asks for folds\.n_folds=3"):
        train_project(ProjectConfig.from_dict(cfg.to_dict(), overrides=["folds.n_folds=3"]))
    write_images(tmp_path / "data" / "train", [("cat/extra.png", 0)])
    with pytest.raises(ValidationError, match="other training images.*cat/extra.png"):
        train_project(cfg)


def test_unlabelled_flat_test_folder(tmp_path):
    _folder_data(tmp_path / "data", labelled_test=False)
    train, test = open_sources(_config(tmp_path).data)
    assert not test.is_labelled and sorted(test.ids) == [f"img{i}" for i in range(6)]
    assert test.classes == train.classes


def test_students_train_after_complete_teachers(tmp_path):
    _folder_data(tmp_path / "data")
    student = {**TINY, "pseudo_label": {"teachers": ["teacher"], "threshold": None, "top_fraction": 0.5}}
    cfg = _config(tmp_path, student=student, teacher=TINY)
    assert training_order(cfg) == ["teacher", "student"]
    with pytest.raises(ValidationError, match=r"teachers that are not complete.*teacher \(missing folds all\)"):
        train_project(cfg, models=["student"])
    train_project(cfg)
    store = LogitStore(cfg.store)
    assert store.entry("student").meta["n_extra_train"] == 3  # half of the 6 test images
    cyclic = {"a": {**TINY, "pseudo_label": {"teachers": ["b"]}}, "b": {**TINY, "pseudo_label": {"teachers": ["a"]}}}
    with pytest.raises(ValidationError, match="cycle"):
        training_order(_config(tmp_path, **cyclic))


@pytest.fixture
def logit_store(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    y_test = np.arange(30) % 3
    store = LogitStore.create(tmp_path / "s", [f"id{i}" for i in range(90)], [["a", "b", "c"][k] for k in y],
                              classes=["a", "b", "c"], n_folds=3, test_ids=[f"t{i}" for i in range(30)])
    for i in range(3):
        store.put(f"m{i}", np.eye(3)[y] * (1 + i) + rng.normal(size=(90, 3)),
                  np.eye(3)[y_test] * (1 + i) + rng.normal(size=(30, 3)))
    (store.path / "project").mkdir()
    np.save(store.path / "project" / "test_labels.npy", y_test)
    return store


def test_fit_stack_saves_and_reloads(logit_store):
    result = fit_stack(logit_store, StackConfig(recipe="aoi", metric="accuracy", n_trials=5))
    assert result.path == logit_store.path / "stacks" / "aoi"
    # one artifact: the Stacker's files, its predictions, and one manifest holding summary and report
    names = sorted(p.name for p in result.path.iterdir())
    assert "stack.json" in names and "summary.json" not in names and "report.csv" not in names
    assert {f"predictions.{k}.npy" for k in ("oof_proba", "oof_labels", "test_proba", "test_labels")} <= set(names)
    again = load_stack(logit_store)
    np.testing.assert_array_equal(again.test_proba, result.test_proba)
    # the saved Stacker predicts the store's test logits as the stack did when it was fitted
    np.testing.assert_allclose(again.load_stacker().predict_proba(logit_store), result.test_proba, atol=1e-6)
    assert again.summary.class_rules == {2: 0.4}
    assert set(again.summary.stages[0].model_weights) == {"m0", "m1", "m2"}
    assert set(again.info.held_out_test) == {"log_loss", "accuracy", "f1_macro"}
    assert again.summary == again.load_stacker().describe()
    board = results_table(logit_store, again)
    assert board["step"].tolist()[-1] == "final (as submitted)"
    assert board.set_index("step").loc["m2", "test_accuracy"] > board.set_index("step").loc["m0", "test_accuracy"]
    # refitting replaces the saved stack in place, leaving no staging folders behind
    fit_stack(logit_store, StackConfig(recipe="aoi", metric="accuracy", n_trials=5))
    assert sorted(p.name for p in (logit_store.path / "stacks").iterdir()) == ["aoi"]
    fit_stack(logit_store, StackConfig(recipe="hill_climb", name="hc"))
    assert list_stacks(logit_store) == ["aoi", "hc"] and load_stack(logit_store).name == "hc"
    with pytest.raises(StoreError, match=r"no stack 'nope'; saved stacks: \['aoi', 'hc'\]"):
        load_stack(logit_store, "nope")


def test_submission_formats(logit_store):
    stack = fit_stack(logit_store, StackConfig(recipe="hill_climb", metric="log_loss"))
    probs = submission_frame(logit_store, stack)  # auto: log loss -> probabilities
    assert list(probs.columns) == ["id", "a", "b", "c"] and probs["id"].tolist() == [f"t{i}" for i in range(30)]
    np.testing.assert_allclose(probs[["a", "b", "c"]].to_numpy(), stack.test_proba)
    labels = submission_frame(logit_store, stack, format="labels", id_col="ID", label_col="Label")
    assert list(labels.columns) == ["ID", "Label"] and set(labels["Label"]) <= {"a", "b", "c"}
    assert (labels["Label"] == pd.Series(["a", "b", "c"])[stack.test_proba.argmax(1)].to_numpy()).all()
    with pytest.raises(ValidationError, match="collides with a class"):
        submission_frame(logit_store, stack, format="probs", id_col="a")
    with pytest.raises(ValidationError, match="format must be"):
        submission_frame(logit_store, stack, format="xml")


def test_no_stack_yet_is_a_clear_error(logit_store):
    with pytest.raises(StoreError, match="no fitted stack yet: run `ensemble-kit stack"):
        load_stack(logit_store)


def test_a_database_password_in_the_config_never_reaches_the_store(tmp_path):
    from dataclasses import replace

    from ensemble_kit.project import open_project_store

    _folder_data(tmp_path / "data")
    cfg = _config(tmp_path)
    cfg = replace(cfg, stack=replace(cfg.stack, storage="postgresql://me:s3cret@db.example/optuna"))
    store = open_project_store(cfg, *open_sources(cfg.data))
    saved = (store.path / "project" / "project.yaml").read_text()
    assert "s3cret" not in saved and "postgresql://me:***@db.example/optuna" in saved


def test_progress_lines_count_the_commands_models_and_folds_and_its_eta_reaches_zero(tmp_path, caplog, monkeypatch):
    import logging
    import re

    import ensemble_kit._progress as progress_module
    from ensemble_kit._progress import bars_off

    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)  # a line after every batch
    _folder_data(tmp_path / "data")
    cfg = _config(tmp_path, r10=TINY, r10b={**TINY, "seed": 1})
    train_project(cfg, folds=[1])  # fold 1 stored first: the command below trains fold 0 of each model only
    caplog.clear()
    with bars_off(), caplog.at_level(logging.INFO, logger="ensemble_kit"):
        train_project(cfg)
    pattern = re.compile(r"^model (\d)/2 (\w+), fold 1/2 \(id 0\), epoch 1/1, batch (\d)/(\d), [\d.]+ img/s, "
                         r"ETA (\d\d):(\d\d):(\d\d)")
    found = [m.groups() for m in map(pattern.match, (r.getMessage() for r in caplog.records)) if m]
    assert {(i, name) for i, name, *_ in found} == {("1", "r10"), ("2", "r10b")}
    assert [i for i, *_ in found] == sorted(i for i, *_ in found)  # model 1's lines, then model 2's
    etas = [int(h) * 3600 + int(m) * 60 + int(s) for *_, h, m, s in found]
    assert etas[-1] == 0  # the whole command's ETA: nothing left after the last batch of the last model
    lines = [r.getMessage() for r in caplog.records]
    assert "model 1/2 r10, fold 2/2 (id 1): already stored, skipped" in lines
