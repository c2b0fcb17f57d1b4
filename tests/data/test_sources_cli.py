"""On the command line, an image folder holding entries that are no image files is exit code 2 and
one ``error:`` line naming them: never a submission or a store that silently lacks those images."""

from __future__ import annotations

import os

import pytest

from ensemble_kit.cli.main import main
from helpers import write_images

CLASSES = ["cat", "dog"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A one-model, one-fold bundle: an untrained plain CNN exported as the trainer exports (cheap;
    these tests are about the images, not the predictions)."""
    from ensemble_kit.project.predict import Predictor
    from ensemble_kit.train import TrainConfig
    from ensemble_kit.train.export import export_fold_model
    from ensemble_kit.train.models import build_model

    root = tmp_path_factory.mktemp("bundle")
    cfg = TrainConfig(model="plain_cnn", img_size=16, epochs=1, batch_size=4, device="cpu")
    folder = export_fold_model(root / "fold0", build_model("plain_cnn", num_classes=2), config=cfg, classes=CLASSES,
                               fold=0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return Predictor({"m": [folder]}, stack=None, classes=CLASSES, device="cpu").save_bundle(root / "bundle")


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"ensemble-kit {command}: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_predict_on_a_folder_with_a_fifo_or_a_dangling_link_exits_2_naming_them(bundle, tmp_path, capsys):
    images = tmp_path / "test"
    write_images(images, [("x0.png", 0), ("x1.png", 1)])
    out = tmp_path / "sub.csv"
    assert main(["predict", str(bundle), "--images", str(images), "--out", str(out)]) == 0  # the clean folder
    out.unlink()
    capsys.readouterr()
    os.mkfifo(images / "a.png")
    os.symlink(images / "gone.png", images / "b.jpg")
    assert main(["predict", str(bundle), "--images", str(images), "--out", str(out)]) == 2
    line = _one_error_line(capsys, "predict")
    assert "a.png" in line and "FIFO" in line and "b.jpg" in line and "dangling symbolic link" in line
    assert not out.exists()
    (images / "a.png").unlink()
    (images / "b.jpg").unlink()
    (images / "c.jpg").mkdir()  # a flat folder with a sub-folder is read as class folders: still named
    assert main(["predict", str(bundle), "--images", str(images), "--out", str(out)]) == 2
    line = _one_error_line(capsys, "predict")
    assert "c.jpg' (a directory named like an image" in line and "x0.png' (an image outside every class" in line
    assert not out.exists()


def test_train_on_a_class_folder_with_a_link_leaving_it_exits_2_before_a_store_exists(tmp_path, capsys):
    from ensemble_kit.project import ProjectConfig

    write_images(tmp_path / "data" / "train", [(f"{c}/{i}.png", k) for k, c in enumerate(CLASSES) for i in range(4)])
    write_images(tmp_path / "private", [("secret.png", 0)])
    os.symlink(tmp_path / "private" / "secret.png", tmp_path / "data" / "train" / "dog" / "z.png")
    cfg = ProjectConfig.from_dict({
        "store": str(tmp_path / "store"), "data": {"format": "folder", "root": str(tmp_path / "data"), "train": "train"},
        "folds": {"n_folds": 2}, "models": {"m": {"model": "plain_cnn", "img_size": 16, "epochs": 1, "device": "cpu"}}})
    cfg.to_yaml(tmp_path / "project.yaml")
    assert main(["train", str(tmp_path / "project.yaml")]) == 2
    line = _one_error_line(capsys, "train")
    assert "dog/z.png" in line and "symbolic link leaving" in line and "secret.png" in line
    assert not (tmp_path / "store").exists()
