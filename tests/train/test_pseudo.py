"""Pseudo-labels per fold: a student's fold k learns only from teacher models that never saw fold k."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.data import ArrayImageSource
from ensemble_kit.data.sources import SubsetSource
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import softmax
from ensemble_kit.train import TrainConfig, pseudo_label, pseudo_labels_by_fold, train_cv
from ensemble_kit.train.fold import fold_data
from helpers import tiny_image_data

# no augmentation: an unlabelled copy of a training image is that image, pixel for pixel
MEMORISE = {"model": "plain_cnn", "img_size": 8, "epochs": 15, "batch_size": 32, "seed": 0, "device": "cpu",
            "optimizer": {"lr": 0.01, "weight_decay": 0.0},
            "augment": {"random_resized_crop": False, "hflip": 0.0}}


def _noise_experiment(tmp_path):
    """90 pure-noise images with random labels; the unlabelled set is a copy of each of them; a
    teacher that memorises its training rows (as a deep model does): each fold model knows the
    label of every row it trained on and guesses on the rest."""
    rng = np.random.default_rng(0)
    n, n_folds = 90, 3
    images = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 3, n)
    train = ArrayImageSource(images, y, ids=[f"r{i}" for i in range(n)], classes=[0, 1, 2])
    copies = ArrayImageSource(images.copy(), ids=[f"u{i}" for i in range(n)], classes=[0, 1, 2])
    store = LogitStore.create(tmp_path / "store", train.ids, y, [0, 1, 2], n_folds=n_folds, seed=0, test_ids=copies.ids)
    for k in range(n_folds):
        rows = store.fold_indices(k)
        seen = store.folds != k  # copy i shows training row i: known to every fold model but fold(i)'s
        test = np.where(seen[:, None], np.eye(3)[y] * 8.0, rng.normal(size=(n, 3)) * 3)
        store.put_fold("teacher", k, rng.normal(size=(len(rows), 3)), test, kind="logits")
    return store, train, copies, y


def _student_oof_accuracy(store: LogitStore, train, copies, extra, name: str) -> float:
    train_cv(TrainConfig.from_dict(MEMORISE), store, train, copies, name=name, extra_train=extra)
    return float(np.mean(store.oof(name).argmax(axis=1) == store.y))


def test_random_labels_stay_at_chance_with_per_fold_pseudo_labels(tmp_path):
    store, train, copies, y = _noise_experiment(tmp_path)
    chance, n = 1 / 3, len(y)
    bound = chance + 3 * np.sqrt(chance * (1 - chance) / n)
    honest = pseudo_labels_by_fold(store, ["teacher"], copies, top_fraction=1.0)
    agree = 0  # fold k's copies of its own rows carry no information on their labels
    for k, extra in honest.items():
        own = np.isin(extra.ids, [f"u{i}" for i in store.fold_indices(k)])
        agree += int(np.sum(extra.labels[own] == y[store.fold_indices(k)]))
    assert agree / n <= bound
    assert _student_oof_accuracy(store, train, copies, honest, "student") <= bound

    # the control, what fold-averaged pseudo-labels did: the same student reaches far above chance,
    # so the experiment can tell a leak when there is one
    pooled_probs = softmax(store.test("teacher", reduce=None)).mean(axis=0)
    pooled = SubsetSource(copies, np.arange(n), targets=pooled_probs.argmax(axis=1))
    assert np.mean(pooled.labels == y) == 1.0
    assert _student_oof_accuracy(store, train, copies, {k: pooled for k in range(store.n_folds)}, "leaky") > 0.8


def _store(tmp_path):
    train, test, _ = tiny_image_data()
    store = LogitStore.create(tmp_path / "store", train.ids, train.labels, [0, 1, 2], n_folds=2, seed=0,
                              test_ids=test.ids)
    return store, train, test


def test_each_fold_is_labelled_by_the_teachers_model_of_that_fold(tmp_path):
    store, train, test = _store(tmp_path)
    for k in range(2):  # fold 0's model says class 0 for every test image, fold 1's class 2
        rows = store.fold_indices(k)
        store.put_fold("t", k, np.zeros((len(rows), 3)), np.tile(np.eye(3)[2 * k] * 5, (12, 1)), kind="logits")
    assert pseudo_label(store, ["t"], test, fold=0, threshold=0.9).labels.tolist() == [0] * 12
    assert pseudo_label(store, ["t"], test, fold=1, threshold=0.9).labels.tolist() == [2] * 12
    by_fold = pseudo_labels_by_fold(store, ["t"], test, folds=[1], top_fraction=0.5, per_class_cap=4)
    assert list(by_fold) == [1] and by_fold[1].labels.tolist() == [2] * 4  # top half, then the class cap


def test_pseudo_labelled_images_train_their_fold_only_and_never_validate(tmp_path):
    store, train, test = _store(tmp_path)
    cfg = TrainConfig.from_dict({**MEMORISE, "epochs": 2})
    train_cv(cfg, store, train, test, name="teacher")
    extras = pseudo_labels_by_fold(store, ["teacher"], test, top_fraction=0.5, per_class_cap=3)
    for k, extra in extras.items():
        assert 0 < len(extra) <= 6 and set(extra.ids) <= set(store.test_ids)
        data = fold_data(cfg, store, train, np.arange(48), test, np.arange(12), extra, k)
        valid_ids = set(data.valid.source.ids[data.valid.indices])
        assert valid_ids == set(store.train_ids[store.fold_indices(k)]) and not valid_ids & set(extra.ids)
        assert len(data.train) == len(store.train_ids) - len(valid_ids) + len(extra)
    train_cv(cfg, store, train, test, name="student", extra_train=extras)
    assert [store.entry("student").fold_meta[k]["n_extra_train"] for k in range(2)] == [len(extras[0]), len(extras[1])]
    with pytest.raises(ValidationError, match=r"none for fold\(s\) \[1\]"):
        train_cv(cfg, store, train, test, name="student2", extra_train={0: extras[0]})


def test_pseudo_label_errors(tmp_path):
    store, train, test = _store(tmp_path)
    store.put("pooled", np.zeros((48, 3)), np.tile([5.0, 0.0, 0.0], (12, 1)))  # one test prediction for all folds
    with pytest.raises(ValidationError, match="not one per fold model"):
        pseudo_label(store, ["pooled"], test, fold=0, threshold=0.9)
    for k in range(2):
        store.put_fold("t", k, np.zeros((len(store.fold_indices(k)), 3)), np.zeros((12, 3)), kind="logits")
    with pytest.raises(ValidationError, match="exactly one of"):
        pseudo_label(store, ["t"], test, fold=0)
    with pytest.raises(ValidationError, match="unlabeled source .* does not hold exactly the store's ids"):
        pseudo_label(store, ["t"], train, fold=0, threshold=0.9)
    with pytest.raises(ValidationError, match="fold 2 is out of range"):
        pseudo_label(store, ["t"], test, fold=2, threshold=0.9)
