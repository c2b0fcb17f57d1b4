import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from ensemble_kit import LogitStore
from ensemble_kit._progress import bars_off
from ensemble_kit.errors import ValidationError
from ensemble_kit.train import TrainConfig, pseudo_label, train_cv
from ensemble_kit.train.fold import fold_data
from ensemble_kit.train.trainer import _FoldRun, resolve_device
from helpers import tiny_image_data

BASE = {"model": "plain_cnn", "img_size": 16, "epochs": 2, "batch_size": 16, "seed": 0,
        "optimizer": {"lr": 0.01}, "augment": {"random_resized_crop": False}}


def _cfg(**sections):
    data = {**BASE}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainConfig.from_dict(data)


def _store(tmp_path, n_folds=2):
    train, test, y_test = tiny_image_data()
    store = LogitStore.create(tmp_path / "store", train.ids, train.labels, [0, 1, 2], n_folds=n_folds, seed=0,
                              test_ids=test.ids)
    return store, train, test, y_test


def test_train_cv_writes_entry_history_and_config(tmp_path):
    store, train, test, y_test = _store(tmp_path)
    info = train_cv(_cfg(epochs=3), store, train, test, name="cnn")
    assert info.complete and store.oof("cnn").shape == (48, 3) and store.test("cnn").shape == (12, 3)
    assert np.mean(store.oof("cnn").argmax(1) == store.y) > 0.6
    run = store.path / "runs" / "cnn"
    assert TrainConfig.from_yaml(run / "config.yaml").epochs == 3
    history = pd.read_csv(run / "fold0" / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3] and {"lr", "train_loss", "val_loss", "val_accuracy"} <= set(history)
    meta = store.entry("cnn").meta
    assert meta["config"]["model"] == "plain_cnn" and meta["library_version"] and meta["device"] == "cpu"
    kept = store.entry("cnn").fold_meta[0]["history"]  # the curves travel with the entry
    assert kept["epoch"] == [1, 2, 3] and kept["val_loss"] == history["val_loss"].tolist()
    # once a fold is stored its resume checkpoints are pruned; the exported weights stay
    assert list((run / "fold0").glob("epoch_*")) == [] and (run / "fold0" / "model" / "model.json").is_file()


def test_folds_as_separate_jobs_and_completed_folds_never_retrained(tmp_path, monkeypatch):
    store, train, test, _ = _store(tmp_path)
    train_cv(_cfg(epochs=1), store, train, test, name="cnn", folds=[1])
    assert store.incomplete() == {"cnn": (0,)}
    calls = []
    original = _FoldRun.run
    monkeypatch.setattr(_FoldRun, "run", lambda self: calls.append(self.fold) or original(self))
    train_cv(_cfg(epochs=1), store, train, test, name="cnn")
    assert calls == [0] and store.models() == ["cnn"]
    train_cv(_cfg(epochs=1), store, train, test, name="cnn")
    assert calls == [0]
    with pytest.raises(ValidationError, match="fold 5 is out of range"):
        train_cv(_cfg(), store, train, test, name="x", folds=[5])


OPTIONS = {
    "sgd_onecycle_clip_accum": dict(optimizer={"name": "sgd", "lr": 0.05, "clip_grad_norm": 1.0, "accumulation_steps": 2},
                                    schedule={"name": "onecycle"}),
    "cosine_restarts_warmup": dict(schedule={"name": "cosine_restarts", "warmup_epochs": 0.5, "restart_epochs": 1}),
    "focal_balanced": dict(loss="focal", balanced_sampler=True, class_weights="balanced"),
    "bi_tempered_smoothing": dict(loss="bi_tempered", regularization={"label_smoothing": 0.1}),
    "mixup_cutmix_ema": dict(regularization={"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "switch_prob": 0.5, "ema_decay": 0.9}),
    "trivial_erasing_repeated": dict(augment={"policy": "trivial", "random_erasing": 0.5, "repeated_augment": 2}),
    "randaugment_vflip": dict(augment={"policy": "randaugment", "randaugment_n": 2, "randaugment_m": 5, "vflip": 0.5}),
    "autoaugment_crop": dict(augment={"policy": "autoaugment", "random_resized_crop": True, "crop_scale_min": 0.6}),
    "albumentations_aoi": dict(augment={"albumentations": "aoi"}),
    "fixres_test_size": dict(augment={"test_img_size": 24}),
    "gem_droppath_timm": dict(model="resnet10t", img_size=32, pooling="gem", regularization={"drop_path_rate": 0.1, "drop_rate": 0.1}),
    "vit_dataset_norm": dict(model="test_vit", img_size=16, normalize="dataset"),
    "early_stopping": dict(epochs=4, regularization={"early_stopping_patience": 1}),
    "tta_views_kept": dict(tta={"views": ["identity", "hflip", "vflip", "rot90", "scale1.25"], "keep_views": True}),
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_recipe_option_trains(tmp_path, option):
    store, train, test, _ = _store(tmp_path)
    cfg = _cfg(**OPTIONS[option])
    train_cv(cfg, store, train, test, name="m", folds=[0])
    meta = store.entry("m").fold_meta[0]
    assert meta["config"] == cfg.to_dict()
    history = pd.read_csv(store.path / "runs" / "m" / "fold0" / "history.csv")
    assert np.isfinite(history["train_loss"]).all()
    if option == "early_stopping":
        assert 1 <= meta["best_epoch"] <= meta["epochs_run"] <= 4
        assert history["epoch"].tolist() == list(range(1, meta["epochs_run"] + 1))
    if option == "tta_views_kept":  # each view is an entry of its own, checksummed like every entry
        assert sorted(store.incomplete()) == ["m", "m@hflip", "m@identity", "m@rot90", "m@scale1.25", "m@vflip"]
        assert store.entry("m@hflip").fold_meta[0] == {"view_of": "m", "view": "hflip"}
    if option == "vit_dataset_norm":
        assert meta["normalize_mean"] != [0.485, 0.456, 0.406]
    if option == "trivial_erasing_repeated":
        assert history["train_images_per_second"].iloc[0] > 0


RUN = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from helpers import tiny_image_data
    from ensemble_kit import LogitStore
    from ensemble_kit.train import TrainConfig, train_cv
    import ensemble_kit.train.trainer as trainer
    kill_after = int(sys.argv[2])
    if kill_after >= 0:
        original = trainer._FoldRun.save
        def save_then_die(self, parts, progress):
            path = original(self, parts, progress)
            if self.fold == 0 and progress.epoch == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return path
        trainer._FoldRun.save = save_then_die
    train, test, _ = tiny_image_data()
    store = LogitStore(sys.argv[1])
    cfg = TrainConfig.from_dict({"model": "plain_cnn", "img_size": 16, "epochs": 2, "batch_size": 16, "cpu_threads": 1,
        "augment": {"policy": "trivial", "random_erasing": 0.3, "albumentations": "aoi"},
        "regularization": {"mixup_alpha": 0.4, "ema_decay": 0.9}, "optimizer": {"lr": 0.01}})
    train_cv(cfg, store, train, test, name="cnn")
    """
)


def test_killed_run_resumes_to_identical_logits(tmp_path):
    from pathlib import Path

    helpers_dir = str(Path(__file__).resolve().parents[1])
    results = {}
    for label, kill_after in [("straight", -1), ("killed", 0)]:
        store, train, test, _ = _store(tmp_path / label)
        proc = subprocess.run([sys.executable, "-c", RUN, str(store.path), str(kill_after), helpers_dir])
        if kill_after >= 0:
            assert proc.returncode == -signal.SIGKILL
            # checkpoints are named after the epoch they follow, counted from 1
            assert store.models() == [] and list((store.path / "runs" / "cnn" / "fold0").glob("epoch_0001"))
            proc = subprocess.run([sys.executable, "-c", RUN, str(store.path), "-1", helpers_dir])
        assert proc.returncode == 0
        results[label] = (store.oof("cnn"), store.test("cnn"))
    np.testing.assert_array_equal(results["straight"][0], results["killed"][0])
    np.testing.assert_array_equal(results["straight"][1], results["killed"][1])


def test_bad_sources_are_refused(tmp_path):
    store, train, test, _ = _store(tmp_path)
    with pytest.raises(ValidationError, match="does not hold exactly the store's ids"):
        train_cv(_cfg(), store, test, test, name="x")
    with pytest.raises(ValidationError, match="pass test="):
        train_cv(_cfg(), store, train, None, name="x")
    from ensemble_kit.data import ArrayImageSource

    relabelled = ArrayImageSource(np.zeros((48, 16, 16, 3), np.uint8), (train.targets + 1) % 3, ids=train.ids, classes=[0, 1, 2])
    with pytest.raises(ValidationError, match="48 source labels disagree"):
        train_cv(_cfg(), store, relabelled, test, name="x")


def test_training_leaves_the_callers_global_random_state_alone(tmp_path):
    import random

    import torch

    store, train, test, _ = _store(tmp_path)
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    expected = (np.random.random(), random.random(), float(torch.rand(1)))
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    train_cv(_cfg(epochs=1, regularization={"mixup_alpha": 0.4}), store, train, test, name="cnn")
    assert (np.random.random(), random.random(), float(torch.rand(1))) == expected


POSITION = re.compile(r"^model (\d+)/(\d+) (\S+), fold (\d+)/(\d+) \(id (\d+)\), epoch (\d+)/(\d+), "
                      r"batch (\d+)/(\d+), ([\d.]+) img/s, ETA (\d\d):(\d\d):(\d\d)(: .*)?$")


def test_without_a_terminal_each_line_says_where_the_run_is_how_fast_and_its_eta(tmp_path, caplog, monkeypatch):
    import logging

    import ensemble_kit._progress as progress_module

    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)  # a line after every batch, not every 30 s
    store, train, test, _ = _store(tmp_path)
    with bars_off(), caplog.at_level(logging.INFO, logger="ensemble_kit"):
        train_cv(_cfg(epochs=2), store, train, test, name="cnn")
    lines = [r.getMessage() for r in caplog.records]
    parsed = [m.groups() for m in map(POSITION.match, lines) if m]
    # 24 training rows per fold in batches of 16: batches 1/2 and 2/2 of epochs 1/2 and 2/2 of folds 1/2 and 2/2
    steps = {g[3:10] for g in parsed}
    assert steps == {(str(k + 1), "2", str(k), str(e), "2", str(b), "2") for k in (0, 1) for e in (1, 2) for b in (1, 2)}
    assert all(g[:3] == ("1", "1", "cnn") and float(g[10]) > 0 for g in parsed)
    etas = [int(g[11]) * 3600 + int(g[12]) * 60 + int(g[13]) for g in parsed]
    assert etas[-1] == 0  # the last batch of the last epoch of the last fold: nothing left to train
    # each epoch's end is a line with its figures, numbered as history.csv numbers it
    ends = [(g[5], g[6], g[14]) for g in parsed if g[14]]
    assert [(k, e) for k, e, _ in ends] == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]
    assert all("train loss" in text and "val loss" in text and "val accuracy" in text for _, _, text in ends)
    for fold in (0, 1):
        assert any(line.startswith(f"model 1/1 cnn, fold {fold + 1}/2 (id {fold}) stored: best epoch") for line in lines)
    assert any(line.startswith("model 1/1 cnn: CPU threads: torch ") for line in lines)


def test_epochs_are_numbered_alike_in_the_log_history_csv_store_and_report(tmp_path, caplog, monkeypatch):
    import logging

    from ensemble_kit.report import figures, write_report

    store, train, test, _ = _store(tmp_path)
    with bars_off(), caplog.at_level(logging.INFO, logger="ensemble_kit"):
        train_cv(_cfg(epochs=2), store, train, test, name="cnn")
    logged = [int(m.group(7)) for m in map(POSITION.match, (r.getMessage() for r in caplog.records))
              if m and m.group(6) == "0" and m.group(15)]
    csv_epochs = pd.read_csv(store.path / "runs" / "cnn" / "fold0" / "history.csv")["epoch"].tolist()
    meta = store.entry("cnn").fold_meta[0]
    drawn = {}
    draw = figures.training_curves_figure

    def capture(histories):
        fig = draw(histories)
        drawn.update({line.get_label(): [int(x) for x in line.get_xdata()] for line in fig.axes[0].lines})
        return fig

    monkeypatch.setattr(figures, "training_curves_figure", capture)
    write_report(store)
    assert logged == csv_epochs == meta["history"]["epoch"] == drawn["fold 0 val"] == [1, 2]
    assert meta["epochs_run"] == 2 and meta["best_epoch"] in (1, 2)
    assert meta["history"]["val_loss"][meta["best_epoch"] - 1] == min(meta["history"]["val_loss"])


def test_a_checkpoint_written_with_epochs_from_0_resumes_counted_from_1():
    from ensemble_kit.train.trainer import _numbered_from_one

    assert [r["epoch"] for r in _numbered_from_one([{"epoch": 0}, {"epoch": 1}])] == [1, 2]
    assert [r["epoch"] for r in _numbered_from_one([{"epoch": 1}, {"epoch": 2}])] == [1, 2]


def test_a_last_training_batch_of_one_image_is_dropped_not_fed_to_batch_norm(tmp_path):
    # 24 training rows per fold in batches of 23 leave one image over; resnet10t's last BatchNorm
    # sees 1x1 maps at 16 px, so a batch of one has a single value per channel and cannot train
    store, train, test, _ = _store(tmp_path)
    cfg = TrainConfig.from_dict({**BASE, "model": "resnet10t", "epochs": 1, "batch_size": 23})
    assert train_cv(cfg, store, train, test, name="r10").complete
    assert np.isfinite(store.oof("r10")).all() and store.oof("r10").shape == (48, 3)
