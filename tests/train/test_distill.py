"""Distillation: the loss, and soft targets that never carry the labels of the fold they are scored on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ensemble_kit import LogitStore
from ensemble_kit.data import ArrayImageSource
from ensemble_kit.errors import ValidationError
from ensemble_kit.project import distill_targets_by_fold
from ensemble_kit.train import DistillationLoss, SoftTargets, TrainConfig, train_cv

# no augmentation: an unlabelled copy of a training image is that image, pixel for pixel
MEMORISE = {"model": "plain_cnn", "img_size": 8, "epochs": 15, "batch_size": 32, "seed": 0, "device": "cpu",
            "optimizer": {"lr": 0.01, "weight_decay": 0.0},
            "augment": {"random_resized_crop": False, "hflip": 0.0}}
STUDENT = {**MEMORISE, "epochs": 10, "distill": {"alpha": 0.5, "temperature": 1.0}}


def test_distillation_loss_values() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 1, 2])
    soft = torch.softmax(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]) / 2.0, dim=1)
    target = torch.cat([labels[:, None].float(), soft], dim=1)
    ce = nn.functional.cross_entropy(logits, labels)
    kl = nn.functional.kl_div(torch.log_softmax(logits / 2.0, dim=1), soft, reduction="batchmean") * 4.0
    assert torch.isclose(DistillationLoss(nn.CrossEntropyLoss(), alpha=0.0, temperature=2.0)(logits, target), ce)
    assert torch.isclose(DistillationLoss(nn.CrossEntropyLoss(), alpha=1.0, temperature=2.0)(logits, target), kl)
    mixed = DistillationLoss(nn.CrossEntropyLoss(), alpha=0.3, temperature=2.0)(logits, target)
    assert torch.isclose(mixed, 0.7 * ce + 0.3 * kl)
    unlabelled = target.clone()
    unlabelled[1:, 0] = -1  # rows without a label add to the soft part only
    partial = DistillationLoss(nn.CrossEntropyLoss(), alpha=0.3, temperature=2.0)(logits, unlabelled)
    assert torch.isclose(partial, 0.7 * nn.functional.cross_entropy(logits[:1], labels[:1]) + 0.3 * kl)


def _noise_experiment(tmp_path):
    """90 pure-noise images with random labels, a teacher that memorises its training rows, and
    an unlabelled set that is a copy of every training image (near-duplicates, as in AOI data)."""
    rng = np.random.default_rng(0)
    n = 90
    images = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 3, n)
    train = ArrayImageSource(images, y, ids=[f"r{i}" for i in range(n)], classes=[0, 1, 2])
    copies = ArrayImageSource(images.copy(), ids=[f"u{i}" for i in range(n)], classes=[0, 1, 2])
    store = LogitStore.create(tmp_path / "store", train.ids, y, [0, 1, 2], n_folds=3, seed=0, test_ids=copies.ids)
    train_cv(TrainConfig.from_dict(MEMORISE), store, train, copies, name="teacher")
    return store, train, copies, y


@pytest.mark.slow
def test_random_labels_stay_at_chance_when_distilling_per_fold(tmp_path):
    store, train, copies, y = _noise_experiment(tmp_path)
    chance, n = 1 / 3, len(y)
    bound = chance + 3 * np.sqrt(chance * (1 - chance) / n)
    honest = distill_targets_by_fold(store, ["teacher"], train, temperature=1.0, unlabeled=copies, device="cpu")
    for k, soft in honest.items():  # the teacher memorised its training rows...
        rows = np.flatnonzero(store.folds != k)
        assert np.mean(soft.rows[rows].argmax(axis=1) == y[rows]) > 0.9
        own = store.fold_indices(k)  # ...but its fold-k model never saw fold k: its copies are guesses
        assert np.mean(soft.images_probs[own].argmax(axis=1) == y[own]) <= bound
        assert np.isnan(soft.rows[own]).all()  # the student's validation rows get no target at all
    train_cv(TrainConfig.from_dict(STUDENT), store, train, copies, name="student", soft_targets=honest)
    assert np.mean(store.oof("student").argmax(axis=1) == y) <= bound

    # the control: targets on the copies averaged over every fold's model (which saw the other
    # folds) let the same student learn fold k's labels, so the experiment can tell a leak
    pooled_probs = np.mean([soft.images_probs for soft in honest.values()], axis=0)
    assert np.mean(pooled_probs.argmax(axis=1) == y) > 0.9
    pooled = {k: SoftTargets(rows=soft.rows, images=copies, images_probs=pooled_probs) for k, soft in honest.items()}
    train_cv(TrainConfig.from_dict(STUDENT), store, train, copies, name="leaky", soft_targets=pooled)
    assert np.mean(store.oof("leaky").argmax(axis=1) == y) > 0.7


def test_soft_targets_are_required_and_checked(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    y = np.arange(12) % 3
    train = ArrayImageSource(images, y, ids=[f"r{i}" for i in range(12)], classes=[0, 1, 2])
    store = LogitStore.create(tmp_path / "s", train.ids, y, [0, 1, 2], n_folds=2, seed=0)
    tiny = {**MEMORISE, "epochs": 1}
    with pytest.raises(ValidationError, match="pass soft_targets"):
        train_cv(TrainConfig.from_dict({**tiny, "distill": {}}), store, train, name="s")
    good = SoftTargets(rows=np.full((12, 3), 1 / 3, dtype=np.float32))
    with pytest.raises(ValidationError, match="no distill section"):
        train_cv(TrainConfig.from_dict(tiny), store, train, name="s", soft_targets={0: good, 1: good})
    with pytest.raises(ValidationError, match=r"none for fold\(s\) \[1\]"):
        train_cv(TrainConfig.from_dict({**tiny, "distill": {}}), store, train, name="s", soft_targets={0: good})
    with pytest.raises(ValidationError, match=r"rows must have shape \(12, 3\)"):
        train_cv(TrainConfig.from_dict({**tiny, "distill": {}}), store, train, name="s",
                 soft_targets={k: SoftTargets(rows=np.zeros((11, 3), np.float32)) for k in range(2)})
    with pytest.raises(ValidationError, match="mixup"):
        TrainConfig.from_dict({**tiny, "distill": {}, "regularization": {"mixup_alpha": 0.2}})
    with pytest.raises(ValidationError, match="distill.temperature"):
        TrainConfig.from_dict({**tiny, "distill": {"temperature": 0}})
    assert store.models() == [] and store.incomplete() == {}
    distilled = TrainConfig.from_dict({**tiny, "distill": {}})
    assert not train_cv(distilled, store, train, name="s", folds=[0], soft_targets={0: good}).complete
    # a stored fold is skipped, so it needs no soft targets on the next run
    assert train_cv(distilled, store, train, name="s", soft_targets={1: good}).complete
