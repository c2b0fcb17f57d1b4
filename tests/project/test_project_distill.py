"""A distilled student in a project: YAML, training order, per-fold soft targets from the teachers' fold models."""

from __future__ import annotations

import pytest

from ensemble_kit import LogitStore
from ensemble_kit.errors import ValidationError
from ensemble_kit.project import DistillSpec, ProjectConfig, train_project
from ensemble_kit.project.pipeline import training_order
from helpers import write_images

TINY = {"model": "resnet10t", "img_size": 16, "epochs": 1, "batch_size": 8, "device": "cpu"}


def _config(tmp_path, **models) -> ProjectConfig:
    return ProjectConfig.from_dict({
        "store": str(tmp_path / "store"),
        "data": {"format": "folder", "root": str(tmp_path / "data"), "train": "train", "test": "test"},
        "folds": {"n_folds": 2, "seed": 0}, "models": models})


def test_distill_section_splits_into_teachers_and_loss(tmp_path):
    cfg = _config(tmp_path, teacher=TINY, student={**TINY, "distill": {"from": "teacher", "alpha": 0.7,
                                                                       "temperature": 3, "unlabeled": True}})
    student = cfg.model("student")
    assert student.distill == DistillSpec(teachers=("teacher",), unlabeled=True)
    assert (student.train.distill.alpha, student.train.distill.temperature) == (0.7, 3.0)
    assert ProjectConfig.from_dict(cfg.to_dict()) == cfg
    assert training_order(cfg) == ["teacher", "student"]
    overridden = ProjectConfig.from_dict(cfg.to_dict(), overrides=["models.student.distill.alpha=0.2"])
    assert overridden.model("student").train.distill.alpha == 0.2

    for bad, match in (({"from": "nobody"}, "not models of this config"),
                       ({"from": "student"}, "its own distillation teacher"),
                       ({"from": []}, "must name the teacher"),
                       ({"from": "teacher", "unlabeled": "yes"}, "true or false"),
                       ({"from": "teacher", "alpha": 1.5}, "distill.alpha"),
                       ({"from": "teacher", "beta": 1}, "distill.beta")):
        with pytest.raises(ValidationError, match=match):
            _config(tmp_path, teacher=TINY, student={**TINY, "distill": bad})
    with pytest.raises(ValidationError, match="cannot be combined"):
        _config(tmp_path, teacher=TINY, student={**TINY, "distill": {"from": "teacher"},
                                                 "pseudo_label": {"teachers": ["teacher"]}})


def test_students_distil_after_complete_teachers(tmp_path):
    classes = ["cat", "dog", "emu"]
    write_images(tmp_path / "data" / "train", [(f"{c}/{i}.png", k) for k, c in enumerate(classes) for i in range(8)])
    write_images(tmp_path / "data" / "test", [(f"img{i}.png", i % 3) for i in range(6)], seed=1)
    cfg = _config(tmp_path, student={**TINY, "distill": {"from": ["teacher"], "unlabeled": True}}, teacher=TINY)
    with pytest.raises(ValidationError, match=r"distilled from teachers that are not complete"):
        train_project(cfg, models=["student"])
    entries = train_project(cfg)
    assert list(entries) == ["teacher", "student"] and entries["student"].complete
    store = LogitStore(cfg.store)
    student = store.entry("student").meta
    assert student["n_extra_train"] == 6  # the unlabelled test images joined every fold
    assert student["config"]["distill"] == {"alpha": 0.5, "temperature": 2.0}
