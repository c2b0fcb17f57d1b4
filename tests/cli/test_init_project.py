"""`ensemble-kit init PROJECT.yaml --images DATA`: from a competition's folders to a commented,
validated project YAML that trains as written; the store form (`init STORE --labels`) stays."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ensemble_kit.cli.main import main
from ensemble_kit.project import ProjectConfig
from helpers import write_images

CLASSES = ["cat", "dog", "emu"]


def _competition(root: Path, *, sample: str | None = "probs", n_test: int = 5, per_class: int = 4) -> Path:
    """DATA/train/<class>/*.png, DATA/test/img<i>.png and a sample submission naming the files (with .png)."""
    write_images(root / "train", [(f"{c}/{c}{i}.png", k) for k, c in enumerate(CLASSES) for i in range(per_class)])
    write_images(root / "test", [(f"img{i}.png", i % 3) for i in range(n_test)], seed=1)
    ids = [f"img{i}.png" for i in range(n_test)][::-1]
    if sample == "probs":
        pd.DataFrame({"image": ids, "emu": 0.2, "cat": 0.4, "dog": 0.4}).to_csv(root / "sample_submission.csv",
                                                                                 index=False)
    elif sample == "labels":
        pd.DataFrame({"file": ids, "animal": "cat"}).to_csv(root / "sample_submission.csv", index=False)
    return root


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ensemble-kit init: error:"), err
    return err[0]


def _uncommented_sections(text: str) -> list[str]:
    """Top-level keys with no comment on their line or on the line just above."""
    lines = text.splitlines()
    return [line.split(":")[0] for i, line in enumerate(lines)
            if re.match(r"^[a-z]+:", line) and "#" not in line and not lines[i - 1].startswith("#")]


@pytest.mark.parametrize("sample", ["probs", "labels"])
def test_init_images_writes_a_commented_project_that_follows_the_folders_and_the_sample(tmp_path, monkeypatch,
                                                                                        capsys, sample):
    _competition(tmp_path / "data", sample=sample)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "comp.yaml", "--images", "data", "--folds", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    cfg = ProjectConfig.from_yaml("comp.yaml")
    assert (cfg.data.format, cfg.data.root, cfg.data.train, cfg.data.test) == ("folder", "data", "train", "test")
    assert (cfg.folds.n_folds, cfg.folds.seed, cfg.store) == (2, 3, "runs/comp/store")
    assert len(cfg.models) == 2 and cfg.stack.recipe == "full"
    assert {m.train.img_size for m in cfg.models} == {32}  # the 16 px images are small: 32, not 64
    if sample == "probs":
        assert (cfg.submission.format, cfg.submission.id_col, cfg.stack.metric) == ("probs", "image", "log_loss")
    else:
        assert (cfg.submission.format, cfg.submission.id_col, cfg.submission.label_col, cfg.stack.metric) == \
            ("labels", "file", "animal", "accuracy")
    text = (tmp_path / "comp.yaml").read_text()
    assert _uncommented_sections(text) == []
    assert "3 classes, 12 images (cat 4, dog 4, emu 4)" in text and "5 images" in text
    assert "its ids keep their extension (img4.png)" in text
    assert "next: ensemble-kit train comp.yaml" in out
    assert "--sample-submission data/sample_submission.csv" in out and "3 classes, 12 training images" in out


def test_init_explicit_folders_a_store_path_and_no_sample(tmp_path, monkeypatch):
    _competition(tmp_path / "comp", sample=None, per_class=5)
    (tmp_path / "comp" / "test").rename(tmp_path / "holdout")
    monkeypatch.chdir(tmp_path)
    assert main(["init", "cfg/p.yml", "--train", "comp/train", "--test", "holdout", "--store", "stores/p"]) == 0
    cfg = ProjectConfig.from_yaml("cfg/p.yml")
    assert (cfg.data.root, cfg.data.train, cfg.data.test, cfg.store) == (".", "comp/train", "holdout", "stores/p")
    assert (cfg.submission.format, cfg.submission.id_col, cfg.stack.metric) == ("auto", "id", "log_loss")
    assert main(["init", "q.yaml", "--train", "comp/train", "--folds", "4"]) == 0  # no test folder at all
    cfg = ProjectConfig.from_yaml("q.yaml")
    assert (cfg.data.root, cfg.data.train, cfg.data.test, cfg.folds.n_folds) == ("comp", "train", None, 4)


def test_init_never_overwrites_and_refuses_what_train_would_refuse(tmp_path, monkeypatch, capsys):
    data = _competition(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "comp.yaml").write_text("mine\n")
    assert main(["init", "comp.yaml", "--images", "data", "--folds", "2"]) == 2
    assert "already exists; init never overwrites" in _error(capsys)
    assert (tmp_path / "comp.yaml").read_text() == "mine\n"
    cases = [
        (["x.yaml", "--images", "data"], "needs at least 5 images per class; 'cat' has 4"),  # default 5 folds
        (["x.yaml", "--images", "nope"], "not a folder"),
        (["x.yaml", "--images", "data/train"], "no 'train' folder"),
        (["x.yaml", "--images", "data", "--test", "data/test"], "--test goes with --train"),
        (["x.yaml", "--images", "data", "--fold-col", "fold"], "--fold-col belongs to a store"),
        (["x.yaml", "--train", "data/train", "--id-col", "image"], "--id-col belongs to a store"),
        (["x", "--images", "data", "--folds", "2"], "name it like PROJECT.yaml"),
        (["x.yaml"], "give --labels CSV"),
        (["store", "--labels", "data/sample_submission.csv", "--store", "s"], "--store belongs to an image project"),
    ]
    for args, expected in cases:
        assert main(["init", *args]) == 2, args
        assert expected in _error(capsys), args
    pd.DataFrame({"image": ["img0.png", "zzz.png"], "emu": 0.0, "cat": 0.0, "dog": 0.0}).to_csv(
        data / "other.csv", index=False)
    assert main(["init", "x.yaml", "--images", "data", "--folds", "2", "--sample-submission", "data/other.csv"]) == 2
    line = _error(capsys)
    assert "does not list the images of" in line and "'zzz.png'" in line
    pd.DataFrame({"image": ["img0.png"], "cat": 0.0, "dog": 0.0}).to_csv(data / "cols.csv", index=False)
    assert main(["init", "x.yaml", "--images", "data", "--folds", "2", "--sample-submission", "data/cols.csv"]) == 2
    assert "are neither the classes" in _error(capsys)
    assert not (tmp_path / "x.yaml").exists() and not (tmp_path / "x").exists()


def test_the_store_form_still_creates_a_store(tmp_path, capsys):
    pd.DataFrame({"id": [f"{i:03d}" for i in range(12)], "label": ["a", "b"] * 6}).to_csv(tmp_path / "train.csv",
                                                                                          index=False)
    assert main(["init", str(tmp_path / "store"), "--labels", str(tmp_path / "train.csv"), "--folds", "3"]) == 0
    assert "12 training ids, 2 classes, 3 folds" in capsys.readouterr().out


def test_the_written_project_trains_and_submits_with_the_sample_submissions_ids(tmp_path, monkeypatch, capsys):
    """The YAML is ready for `train` as written (only made smaller here), and the sample's `img0.png`
    ids are matched to the test images `img0.png` (ids `img0`) and kept in the submission."""
    _competition(tmp_path / "data", sample="probs")
    monkeypatch.chdir(tmp_path)
    assert main(["init", "comp.yaml", "--images", "data", "--folds", "2"]) == 0
    assert main(["-q", "train", "comp.yaml", "--set", "models.*.epochs=1", "--set", "models.*.device=cpu",
                 "--set", "models.*.batch_size=8"]) == 0
    assert main(["-q", "stack", "comp.yaml", "--recipe", "hill_climb", "--n-trials", "3"]) == 0
    assert main(["submit", "runs/comp/store", "--sample-submission", "data/sample_submission.csv",
                 "--out", "submission.csv"]) == 0
    submission = pd.read_csv(tmp_path / "submission.csv")
    sample = pd.read_csv(tmp_path / "data" / "sample_submission.csv")
    assert submission.columns.tolist() == ["image", "emu", "cat", "dog"]
    assert submission["image"].tolist() == sample["image"].tolist() == [f"img{i}.png" for i in (4, 3, 2, 1, 0)]
    # without the sample, `submit` writes the project's submission: section (the store's ids have no extension)
    assert main(["submit", "runs/comp/store", "--out", "plain.csv"]) == 0
    plain = pd.read_csv(tmp_path / "plain.csv")
    assert plain.columns.tolist() == ["image", "cat", "dog", "emu"] and plain["image"].tolist()[0] == "img0"
    saved = yaml.safe_load((tmp_path / "runs" / "comp" / "store" / "project" / "project.yaml").read_text())
    assert saved["folds"]["n_folds"] == 2
