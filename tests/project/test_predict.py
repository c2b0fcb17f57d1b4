"""Predicting new images: the store's own test images give back the stored logits, bundles travel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from ensemble_kit.cli.main import main
from ensemble_kit.errors import ArtifactError, ValidationError
from ensemble_kit.project import ProjectConfig, StackConfig, fit_stack, train_project
from ensemble_kit.project.predict import Predictor, image_source
from ensemble_kit.store import LogitStore
from helpers import reseal, write_images

BASE = {"model": "plain_cnn", "img_size": 16, "epochs": 1, "batch_size": 8, "device": "cpu",
        "augment": {"random_resized_crop": False}}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    classes = ["cat", "dog", "emu"]
    write_images(root / "data" / "train", [(f"{c}/{i}.png", k) for k, c in enumerate(classes) for i in range(8)])
    write_images(root / "data" / "test", [(f"img{i}.png", i % 3) for i in range(7)], seed=1)
    cfg = ProjectConfig.from_dict({
        "store": str(root / "store"),
        "data": {"format": "folder", "root": str(root / "data"), "train": "train", "test": "test"},
        "folds": {"n_folds": 2, "seed": 0},
        "models": {"cnn": {**BASE, "tta": {"views": ["identity", "hflip"]}, "regularization": {"ema_decay": 0.9}},
                   "r10": {**BASE, "model": "resnet10t", "normalize": "dataset", "seed": 1}},
        "stack": {"recipe": "aoi", "metric": "accuracy", "n_trials": 4},
        "submission": {"format": "labels", "id_col": "image", "label_col": "animal"},
    })
    cfg.to_yaml(root / "project.yaml")
    train_project(cfg)
    store = LogitStore(cfg.store)
    fit_stack(store, cfg.stack)
    return root, cfg, store


def test_predicting_the_stores_test_images_reproduces_its_test_logits(project):
    root, cfg, store = project
    predictor = Predictor.from_project(root / "project.yaml")
    images = image_source(root / "data" / "test", classes=store.classes)
    assert images.ids.tolist() == store.test_ids.tolist()
    logits = predictor.predict_logits(images)
    assert list(logits) == ["cnn", "r10"]
    for name, values in logits.items():
        assert np.abs(values - store.test(name)).max() <= 1e-4, name
    # the submission equals the one `ensemble-kit submit` writes from the store
    assert main(["submit", str(store.path), "--out", str(root / "from_store.csv"), "--format", "labels",
                 "--id-col", "image", "--label-col", "animal"]) == 0
    # `--submission` writes the project's submission: section, as `predict` did by default before the table
    assert main(["predict", str(root / "project.yaml"), "--images", str(root / "data" / "test"), "--submission",
                 "--out", str(root / "predicted.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(root / "predicted.csv"), pd.read_csv(root / "from_store.csv"))
    # the default table decides the same labels (the AOI stack's rule included), with their probabilities
    assert main(["predict", str(root / "project.yaml"), "--images", str(root / "data" / "test"),
                 "--out", str(root / "table.csv")]) == 0
    table, submitted = pd.read_csv(root / "table.csv"), pd.read_csv(root / "from_store.csv")
    assert table.columns.tolist() == ["id", "label", "confidence", "cat", "dog", "emu"]
    assert table["id"].tolist() == submitted["image"].tolist() and table["label"].tolist() == submitted["animal"].tolist()
    chosen = table[["cat", "dog", "emu"]].to_numpy()[np.arange(len(table)), table["label"].map(
        {"cat": 0, "dog": 1, "emu": 2}).to_numpy()]
    np.testing.assert_allclose(table["confidence"], chosen)


def test_fold_models_are_small_weights_only_exports_and_checkpoints_are_pruned(project):
    _, _, store = project
    fold_dir = store.path / "runs" / "cnn" / "fold0"
    assert sorted(p.name for p in fold_dir.iterdir()) == ["history.csv", "model"]
    assert sorted(p.name for p in (fold_dir / "model").iterdir()) == ["model.json", "weights.safetensors"]


def test_a_bundle_moved_elsewhere_predicts_in_a_fresh_process(project, tmp_path):
    root, cfg, store = project
    write_images(tmp_path / "new", [(f"new{i}.png", i % 3) for i in range(5)], seed=7)
    assert main(["bundle", str(root / "project.yaml"), str(tmp_path / "bundle"),
                 "--set", "submission.label_col=kind"]) == 0
    moved = tmp_path / "elsewhere" / "bundle"
    shutil.move(str(tmp_path / "bundle"), moved)
    contents = {p.relative_to(moved).as_posix() for p in moved.rglob("*") if p.is_file()}
    assert "bundle.json" in contents and not any(p.endswith((".pt", "epoch_0000")) or "oof" in p for p in contents)
    for file in moved.rglob("*.json"):  # no path of the machine it was made on (the store's study database)
        assert str(root).encode() not in file.read_bytes() and b"optuna.db" not in file.read_bytes(), file
    expected = Predictor.from_project(cfg).predict_proba(image_source(tmp_path / "new"))
    code = textwrap.dedent("""
        import sys, numpy as np
        from ensemble_kit.project.predict import Predictor, image_source
        np.save(sys.argv[3], Predictor.load(sys.argv[1]).predict_proba(image_source(sys.argv[2])))
    """)
    result = subprocess.run([sys.executable, "-c", code, str(moved), str(tmp_path / "new"), str(tmp_path / "p.npy")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.abs(np.load(tmp_path / "p.npy") - expected).max() <= 1e-6
    # a bundle and its project write the same prediction table
    assert main(["predict", str(moved), "--images", str(tmp_path / "new"), "--out", str(tmp_path / "table.csv")]) == 0
    assert main(["predict", str(root / "project.yaml"), "--images", str(tmp_path / "new"),
                 "--out", str(tmp_path / "project_table.csv")]) == 0
    table = pd.read_csv(tmp_path / "table.csv")
    assert table.columns.tolist() == ["id", "label", "confidence", "cat", "dog", "emu"]
    pd.testing.assert_frame_equal(table, pd.read_csv(tmp_path / "project_table.csv"), atol=1e-6)
    # the bundle carries the project's submission: section, with `bundle --set` applied to it
    assert main(["predict", str(moved), "--images", str(tmp_path / "new"), "--submission",
                 "--out", str(tmp_path / "sub.csv")]) == 0
    assert pd.read_csv(tmp_path / "sub.csv").columns.tolist() == ["image", "kind"]


def test_sample_submission_decides_rows_columns_and_format(project, tmp_path):
    root, _, store = project
    ids = list(reversed(store.test_ids.tolist()))
    pd.DataFrame({"ID": ids, "emu": 0.0, "cat": 0.0, "dog": 0.0}).to_csv(tmp_path / "sample.csv", index=False)
    assert main(["predict", str(root / "project.yaml"), "--images", str(root / "data" / "test"),
                 "--sample-submission", str(tmp_path / "sample.csv"), "--out", str(tmp_path / "out.csv")]) == 0
    out = pd.read_csv(tmp_path / "out.csv", dtype={"ID": str})
    assert out.columns.tolist() == ["ID", "emu", "cat", "dog"] and out["ID"].tolist() == ids
    np.testing.assert_allclose(out[["cat", "dog", "emu"]].sum(axis=1), 1.0, atol=1e-6)
    pd.DataFrame({"ID": ids[:-1] + ["nope"], "label": "cat"}).to_csv(tmp_path / "wrong.csv", index=False)
    predictor = Predictor.from_project(root / "project.yaml")
    with pytest.raises(ValidationError, match=r"1 of its ids were not predicted \(e.g. \['nope'\]\)"):
        predictor.submission(image_source(root / "data" / "test"), sample_submission=tmp_path / "wrong.csv")


@pytest.mark.parametrize("fault", ["other architecture", "planted pickle", "no weights"])
def test_an_exported_model_that_does_not_fit_is_named(project, tmp_path, fault):
    import pickle

    from ensemble_kit.train.export import load_fold_model

    _, _, store = project
    folder = tmp_path / "model"
    shutil.copytree(store.path / "runs" / "r10" / "fold0" / "model", folder)
    manifest = folder / "model.json"
    if fault == "other architecture":
        document = json.loads(manifest.read_text())
        document["config"]["model"] = "resnet14t"
        reseal(folder, "model.json", document)  # the attacker rewrites the manifest's own checksum too
        match = r"model 'resnet14t'.*(missing|bytes of weights)"  # a larger architecture: refused before it is built
    elif fault == "planted pickle":
        (folder / "weights.safetensors").write_bytes(pickle.dumps({"w": 1}))
        match = "does not match its checksum|its record says"
    else:
        (folder / "weights.safetensors").unlink()
        match = "missing"
    with pytest.raises(ArtifactError, match=match):
        load_fold_model(folder)


def test_one_model_is_a_valid_ensemble(project, capsys):
    _, _, store = project
    assert main(["stack", str(store.path), "--models", "cnn", "--recipe", "full"]) == 2
    assert "from_recipe('average')" in capsys.readouterr().err
    assert main(["stack", str(store.path), "--models", "cnn", "--recipe", "average", "--name", "single"]) == 0
    assert main(["stack", str(store.path), "--models", "r10", "--recipe", "aoi", "--name", "single_aoi",
                 "--n-trials", "3"]) == 0


@pytest.mark.parametrize("target", ["the store", "inside the store", "a folder of notes", "the current folder",
                                    "a file", "under a file"])
def test_bundle_never_replaces_what_is_not_a_bundle(project, tmp_path, monkeypatch, capsys, target):
    from helpers import snapshot

    root, _, store = project
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    (tmp_path / "file.txt").write_text("a file")
    monkeypatch.chdir(notes)
    out = {"the store": str(store.path), "inside the store": str(store.path / "entries" / "b"),
           "a folder of notes": str(notes), "the current folder": ".", "a file": str(tmp_path / "file.txt"),
           "under a file": str(tmp_path / "file.txt" / "b")}[target]
    before = snapshot(store.path), snapshot(tmp_path)
    assert main(["bundle", str(root / "project.yaml"), out]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("refusing" in err or "not a folder" in err) and "Traceback" not in err, err
    assert (snapshot(store.path), snapshot(tmp_path)) == before  # nothing written, nothing deleted
    # a bundle replaces a bundle, unless it holds files of yours
    assert main(["bundle", str(root / "project.yaml"), str(tmp_path / "b")]) == 0
    assert main(["bundle", str(root / "project.yaml"), str(tmp_path / "b")]) == 0
    (tmp_path / "b" / "notes.txt").write_text("mine")
    assert main(["bundle", str(root / "project.yaml"), str(tmp_path / "b")]) == 2
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("edit", ["no folds", "stack not a bool", "folds not integers", "classes not names",
                                  "classes repeated"])
def test_a_resealed_bundle_manifest_with_odd_fields_is_named(project, tmp_path, edit):
    root, _, _ = project
    assert main(["bundle", str(root / "project.yaml"), str(tmp_path / "b")]) == 0
    document = json.loads((tmp_path / "b" / "bundle.json").read_text())
    if edit == "no folds":
        document["models"]["cnn"] = []
    elif edit == "stack not a bool":
        document["stack"] = "no"
    elif edit == "folds not integers":
        document["models"]["cnn"] = [0.7, True]
    elif edit == "classes not names":
        document["classes"] = [["x"], {"y": 1}, None]
    else:
        document["classes"] = ["cat", "cat", "emu"]
    reseal(tmp_path / "b", "bundle.json", document)
    with pytest.raises(ArtifactError, match="bundle.json"):
        Predictor.load(tmp_path / "b")


def test_a_bundle_reached_through_a_link_of_yours_or_as_dot_loads(project, tmp_path, monkeypatch):
    import os

    root, _, _ = project
    assert main(["bundle", str(root / "project.yaml"), str(tmp_path / "bundle-2026-12-01")]) == 0
    os.symlink(tmp_path / "bundle-2026-12-01", tmp_path / "current")
    # the latest stack's models (an earlier test may have fitted a one-model stack)
    names = list(json.loads((tmp_path / "bundle-2026-12-01" / "bundle.json").read_text())["models"])
    assert [m.name for m in Predictor.load(tmp_path / "current").models] == names
    monkeypatch.chdir(tmp_path / "bundle-2026-12-01")
    assert [m.name for m in Predictor.load(".").models] == names
