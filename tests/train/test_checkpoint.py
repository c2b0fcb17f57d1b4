"""Checkpoints are safetensors + JSON: a planted file never runs code and gives a named error."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from ensemble_kit import LogitStore
from ensemble_kit.errors import CheckpointError
from ensemble_kit.train import TrainConfig, train_cv
from ensemble_kit.train.checkpoint import list_checkpoints, load_checkpoint_state, save_checkpoint_state
from helpers import snapshot, tiny_image_data

CFG = TrainConfig.from_dict({"model": "plain_cnn", "img_size": 16, "epochs": 1, "batch_size": 16,
                             "augment": {"random_resized_crop": False}})


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _store(tmp_path):
    train, test, _ = tiny_image_data()
    store = LogitStore.create(tmp_path / "store", train.ids, train.labels, [0, 1, 2], n_folds=2, test_ids=test.ids)
    return store, train, test


def test_state_round_trips_every_type_the_trainer_saves(tmp_path):
    state = {"epoch": 3, "best_loss": math.inf, "none": None, "flag": True,
             "optimizer": {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.ones(3)}},
                           "param_groups": [{"lr": 0.1, "params": [0, 1], "betas": (0.9, 0.999)}]},
             "rng": {"numpy": np.random.get_state(), "python": (3, tuple(range(625)), None),
                     "torch": torch.get_rng_state()}}
    back = load_checkpoint_state(save_checkpoint_state(tmp_path / "epoch_0003", state))
    assert back["epoch"] == 3 and back["best_loss"] == math.inf and back["none"] is None and back["flag"] is True
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], torch.ones(3))
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    numpy_state = back["rng"]["numpy"]
    assert numpy_state[0] == "MT19937" and numpy_state[1].dtype == np.uint32
    np.testing.assert_array_equal(numpy_state[1], np.random.get_state()[1])
    assert back["rng"]["python"] == (3, tuple(range(625)), None)
    assert torch.equal(back["rng"]["torch"], torch.get_rng_state())


def test_planted_pickle_checkpoint_never_runs_and_is_named(tmp_path):
    store, train, test = _store(tmp_path)
    fold_dir = store.path / "runs" / "cnn" / "fold0"
    fold_dir.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"config": CFG.to_dict(), "model": _Payload(str(marker))}, fold_dir / "epoch_0009.pt")
    before = snapshot(store.path)
    with pytest.raises(CheckpointError, match="pickle checkpoints.*epoch_0009.pt"):
        train_cv(CFG, store, train, test, name="cnn")
    assert not marker.exists()
    assert store.models() == [] and snapshot(store.path).items() >= before.items()


@pytest.mark.parametrize("fault", ["garbage json", "missing keys", "dangling tensor", "bad tag", "no tensors",
                                   "link"])
def test_planted_checkpoint_folder_gives_a_named_error(tmp_path, fault):
    store, train, test = _store(tmp_path)
    fold_dir = store.path / "runs" / "cnn" / "fold0"
    fold_dir.mkdir(parents=True)
    planted = save_checkpoint_state(fold_dir / "epoch_0000", {"config": CFG.to_dict(), "epoch": 0})
    state_file = planted / "state.json"
    document = json.loads(state_file.read_text())
    if fault == "garbage json":
        state_file.write_bytes(b"\xff\xfe{")
    elif fault == "dangling tensor":
        document["state"]["model"] = {"__tensor__": "t999"}
        state_file.write_text(json.dumps(document))
    elif fault == "bad tag":
        document["state"]["model"] = {"__import__": "os.system"}
        state_file.write_text(json.dumps(document))
    elif fault == "no tensors":
        (planted / "tensors.safetensors").unlink()
    elif fault == "link":
        outside = tmp_path / "elsewhere.json"
        state_file.rename(outside)
        os.symlink(outside, state_file)
    # "missing keys": the planted state has a matching config but none of the training state
    with pytest.raises(CheckpointError, match="epoch_0000"):
        train_cv(CFG, store, train, test, name="cnn")
    assert store.models() == []


def test_checkpoint_listing_ignores_unrelated_files(tmp_path):
    (tmp_path / "history.csv").write_text("epoch\n")
    (tmp_path / "epoch_notes").mkdir()
    save_checkpoint_state(tmp_path / "epoch_0001", {"epoch": 1})
    save_checkpoint_state(tmp_path / "epoch_0000", {"epoch": 0})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch_0000", "epoch_0001"]
