"""`ensemble-kit predict`: what --images takes, what --set may change, the default prediction table,
and argument errors that come before any model is loaded. The bundle is one untrained exported
model (cheap: these tests are about the command line, not the predictions)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import yaml

from ensemble_kit.cli.main import main
from helpers import write_images

CLASSES = ["cat", "dog"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from ensemble_kit.project.predict import Predictor
    from ensemble_kit.train import TrainConfig
    from ensemble_kit.train.export import export_fold_model
    from ensemble_kit.train.models import build_model

    root = tmp_path_factory.mktemp("bundle")
    cfg = TrainConfig(model="plain_cnn", img_size=16, epochs=1, batch_size=4, device="cpu")
    folder = export_fold_model(root / "fold0", build_model("plain_cnn", num_classes=2), config=cfg, classes=CLASSES,
                               fold=0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return Predictor({"m": [folder]}, stack=None, classes=CLASSES, device="cpu").save_bundle(root / "bundle")


@pytest.fixture()
def images(tmp_path):
    write_images(tmp_path / "new", [(f"img{i}.png", i % 2) for i in range(4)], seed=3)
    return tmp_path / "new"


def _error(capsys, command: str = "predict") -> str:
    """The one ``error:`` line (with the lines of a list it opens, as the image checks write them)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"ensemble-kit {command}: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return "\n".join(err[err.index(errors[0]):])


def _no_model_may_load(monkeypatch):
    from ensemble_kit.project.predict import Predictor

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(Predictor, "load", refuse)
    monkeypatch.setattr(Predictor, "from_project", refuse)
    monkeypatch.setattr(Predictor, "__init__", refuse)


def test_the_default_output_is_a_table_of_id_label_confidence_and_every_class(bundle, images, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(bundle), "--images", str(images)]) == 0
    assert "id, label, confidence and 2 class probabilities" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "predictions.csv")  # the default file name of the table
    assert table.columns.tolist() == ["id", "label", "confidence", "cat", "dog"]
    assert table["id"].tolist() == ["img0", "img1", "img2", "img3"]
    probs = table[CLASSES].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert table["label"].tolist() == [CLASSES[k] for k in probs.argmax(axis=1)]  # no stack: arg-max
    np.testing.assert_allclose(table["confidence"], probs.max(axis=1))


def test_the_table_follows_the_decision_not_the_largest_probability(bundle, images):
    from ensemble_kit.project.predict import Predictor, image_source

    predictor = Predictor.load(bundle, device="cpu")
    predictor._decide = lambda proba: np.ones(len(proba), dtype=np.int64)  # a rule that always says 'dog'
    table = predictor.predictions(image_source(images))
    proba = predictor.predict_proba(image_source(images))
    assert table["label"].tolist() == ["dog"] * 4
    np.testing.assert_allclose(table["confidence"], proba[:, 1], rtol=1e-6)


def test_one_or_several_image_files_are_predicted_like_the_same_images_in_a_folder(bundle, images, tmp_path):
    assert main(["predict", str(bundle), "--images", str(images), "--out", str(tmp_path / "all.csv")]) == 0
    everything = pd.read_csv(tmp_path / "all.csv").set_index("id")
    assert main(["predict", str(bundle), "--images", str(images / "img2.png"), "--out", str(tmp_path / "one.csv")]) == 0
    one = pd.read_csv(tmp_path / "one.csv")
    assert one["id"].tolist() == ["img2"]
    np.testing.assert_allclose(one[CLASSES].to_numpy(), everything.loc[["img2"], CLASSES].to_numpy(), atol=1e-6)
    assert main(["predict", str(bundle), "--images", str(images / "img3.png"), str(images / "img0.png"),
                 "--out", str(tmp_path / "two.csv")]) == 0
    two = pd.read_csv(tmp_path / "two.csv")
    assert two["id"].tolist() == ["img3", "img0"]  # in the order given
    np.testing.assert_allclose(two[CLASSES].to_numpy(), everything.loc[["img3", "img0"], CLASSES].to_numpy(), atol=1e-6)


def _bad_images(tmp_path, images):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.csv").write_text("path\n")
    (tmp_path / "cols.csv").write_text("file\nimg0.png\n")
    write_images(tmp_path / "mixed", [("good.png", 0)])
    (tmp_path / "mixed" / "broken.png").write_bytes(b"not a png at all")  # read only when its header is checked
    (tmp_path / "other").mkdir()
    write_images(tmp_path / "other", [("img1.png", 0)])
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    return {
        "missing": ([str(tmp_path / "nope.png")], "'" + str(tmp_path / "nope.png") + "': no such file or folder"),
        "not an image": ([str(tmp_path / "notes.txt")], "not an image file (extensions .jpg"),
        "dangling link": ([str(tmp_path / "dangling.png")], "a dangling symbolic link"),
        "folder and file": ([str(images), str(images / "img0.png")], "give the folder or the CSV alone"),
        "empty folder": ([str(tmp_path / "empty")], "no images with extensions"),
        "empty CSV": ([str(tmp_path / "empty.csv")], "the CSV lists no images"),
        "CSV without path or id": ([str(tmp_path / "cols.csv")], "no 'path' column (image paths) or 'id' column"),
        "same name twice": ([str(images / "img1.png"), str(tmp_path / "other" / "img1.png")], "'img1'"),
        "undecodable image": ([str(tmp_path / "mixed")], "broken.png"),
    }


@pytest.mark.parametrize("case", ["missing", "not an image", "dangling link", "folder and file", "empty folder",
                                  "empty CSV", "CSV without path or id", "same name twice", "undecodable image"])
@pytest.mark.parametrize("source", ["bundle", "config"])
def test_images_argument_errors_come_before_any_model_loads(bundle, images, tmp_path, monkeypatch, capsys, case,
                                                            source):
    paths, expected = _bad_images(tmp_path, images)[case]
    config = tmp_path / "project.yaml"
    config.write_text(yaml.safe_dump({"store": str(tmp_path / "store"), "models": {"m": {"model": "plain_cnn"}}}))
    _no_model_may_load(monkeypatch)
    out = tmp_path / "out.csv"
    assert main(["predict", str(bundle if source == "bundle" else config), "--images", *paths,
                 "--out", str(out)]) == 2
    assert expected in _error(capsys)
    assert not out.exists()


def test_set_on_a_bundle_applies_to_its_submission_format_only(bundle, images, tmp_path, capsys):
    run = ["predict", str(bundle), "--images", str(images), "--out", str(tmp_path / "s.csv")]
    assert main([*run, "--submission"]) == 0  # the bundle's own submission: section (auto: probabilities)
    assert pd.read_csv(tmp_path / "s.csv").columns.tolist() == ["id", "cat", "dog"]
    assert main([*run, "--submission", "--set", "submission.format=labels", "--set", "submission.id_col=image",
                 "--set", "submission.label_col=animal"]) == 0
    shaped = pd.read_csv(tmp_path / "s.csv")
    assert shaped.columns.tolist() == ["image", "animal"] and set(shaped["animal"]) <= set(CLASSES)
    capsys.readouterr()
    assert main([*run, "--set", "models.m.epochs=1"]) == 2
    assert "a bundle's models, classes and stack are fixed" in _error(capsys)
    assert main([*run, "--set", "store=elsewhere"]) == 2
    assert "submission.* keys only" in _error(capsys)
    assert main([*run, "--set", "submission.format=labels"]) == 2  # it would change nothing in the table
    assert "add --submission" in _error(capsys)
    assert main([*run, "--stack", "full"]) == 2
    assert "a bundle holds exactly one" in _error(capsys)


@pytest.mark.parametrize("command, source", [("predict", "bundle"), ("predict", "config"), ("bundle", "config")])
def test_an_unknown_set_key_is_refused_with_a_did_you_mean(bundle, images, tmp_path, monkeypatch, capsys, source,
                                                           command):
    config = tmp_path / "project.yaml"
    config.write_text(yaml.safe_dump({"store": str(tmp_path / "store"), "models": {"m": {"model": "plain_cnn"}}}))
    _no_model_may_load(monkeypatch)
    target = str(bundle if source == "bundle" else config)
    args = (["predict", target, "--images", str(images)] if command == "predict"
            else ["bundle", target, str(tmp_path / "b")])
    for typo, suggestion in (("submission.formatt=probs", "Did you mean 'submission.format'?"),
                             ("submision.format=probs", "Did you mean 'submission'?")):
        for extra in ([], ["--submission"]) if command == "predict" else ([],):
            assert main([*args, *extra, "--set", typo]) == 2
            assert suggestion in _error(capsys, command)
    if source == "config":  # keys the command never reads are refused, not silently ignored
        assert main([*args, "--set", "models.m.epochs=1"]) == 2
        assert "fixed by `train` and `stack`" in _error(capsys, command)


def test_csv_ids_with_extensions_are_matched_to_a_sample_submission_in_its_style(bundle, images, tmp_path, capsys):
    listing = images / "list.csv"
    pd.DataFrame({"id": [f"img{i}.png" for i in range(4)]}).to_csv(listing, index=False)  # images next to the CSV
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"image": ["img3", "img1", "img0", "img2"], "label": "cat"}).to_csv(sample, index=False)
    out = tmp_path / "sub.csv"
    assert main(["predict", str(bundle), "--images", str(listing), "--sample-submission", str(sample),
                 "--out", str(out)]) == 0
    assert pd.read_csv(out).columns.tolist() == ["image", "label"]
    assert pd.read_csv(out)["image"].tolist() == ["img3", "img1", "img0", "img2"]
    pd.DataFrame({"image": [f"img{i}.jpg" for i in range(4)], "label": "cat"}).to_csv(sample, index=False)
    assert main(["predict", str(bundle), "--images", str(listing), "--sample-submission", str(sample),
                 "--out", str(tmp_path / "no.csv")]) == 2
    line = _error(capsys)
    assert "the ids differ only by their extension (4 of them, e.g. 'img0.jpg' in the sample submission, " \
           "'img0.png' predicted)" in line
    assert not (tmp_path / "no.csv").exists()


def test_a_sample_submission_naming_the_files_keeps_their_extension(bundle, images, tmp_path):
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"file": ["img2.png", "img0.png", "img3.png", "img1.png"], "dog": 0.5, "cat": 0.5}).to_csv(
        sample, index=False)
    assert main(["predict", str(bundle), "--images", str(images), "--sample-submission", str(sample),
                 "--out", str(tmp_path / "sub.csv")]) == 0
    out = pd.read_csv(tmp_path / "sub.csv")
    assert out.columns.tolist() == ["file", "dog", "cat"]
    assert out["file"].tolist() == ["img2.png", "img0.png", "img3.png", "img1.png"]


def test_the_bundle_manifest_name_the_cli_checks_is_the_predictors():
    from ensemble_kit.cli.main import _BUNDLE_MANIFEST
    from ensemble_kit.project.predict import BUNDLE_MANIFEST

    assert _BUNDLE_MANIFEST == BUNDLE_MANIFEST


def test_a_source_that_is_neither_a_config_nor_a_bundle_is_named(tmp_path, images, capsys):
    assert main(["predict", str(tmp_path), "--images", str(images)]) == 2
    assert "is neither a project YAML nor a bundle folder" in _error(capsys)
    assert main(["predict", str(tmp_path / "nope.yaml"), "--images", str(images)]) == 2
    assert "does not exist" in _error(capsys)


def test_a_missing_sample_submission_is_named_before_any_model_loads(bundle, images, tmp_path, monkeypatch, capsys):
    _no_model_may_load(monkeypatch)
    assert main(["predict", str(bundle), "--images", str(images), "--sample-submission", str(tmp_path / "no.csv")]) == 2
    line = _error(capsys)
    assert "--sample-submission" in line and "no.csv': no such file" in line
