"""Every example runs end to end on a tiny generated dataset in its own layout (2 folds, tiny models).

The examples' configs name large backbones; the tests override them with ``resnet10t`` at
16 px for one epoch, so what is checked is the example's data layout, its steps (pseudo-labels,
recipes, TTA views) and its outputs (store, report, submission in the competition's format).
"""

from __future__ import annotations

import pickle
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble_kit import LogitStore
from ensemble_kit.project import load_stack
from helpers import class_image, write_images

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY = ["models.*.model=resnet10t", "models.*.img_size=16", "models.*.epochs=1", "models.*.batch_size=8",
        "models.*.pooling=default", "models.*.device=cpu", "models.*.model_kwargs=null", "folds.n_folds=2",
        "stack.n_trials=4", "models.*.augment.test_img_size=null", "models.*.schedule.warmup_epochs=0"]


def run_example(name: str, tmp_path: Path, data_root: Path, extra: list[str] = (), argv: list[str] = ()) -> LogitStore:
    store = tmp_path / "store"
    args = ["--set", f"store={store}", "--set", f"data.root={data_root}"]
    for assignment in [*TINY, *extra]:
        args += ["--set", assignment]
    old = sys.argv
    sys.argv = [str(EXAMPLES / name / "run.py"), *args, *argv]
    try:
        runpy.run_path(str(EXAMPLES / name / "run.py"), run_name="__main__")
    finally:
        sys.argv = old
    return LogitStore(store)


def test_every_example_has_readme_config_and_script():
    for name in ("aoi", "cifar10", "yandex", "cars"):
        for part in ("README.md", "config.yaml", "run.py"):
            assert (EXAMPLES / name / part).is_file(), f"examples/{name}/{part}"


def test_aoi(tmp_path, capsys):
    data = tmp_path / "aoi"
    train = [(f"train_{i:05d}.png", i % 6) for i in range(36)]
    test = [(f"test_{i:05d}.png", i % 6) for i in range(12)]
    write_images(data / "train_images", train, seed=1)
    write_images(data / "test_images", test, seed=2)
    pd.DataFrame({"ID": [n for n, _ in train], "Label": [y for _, y in train]}).to_csv(data / "train.csv", index=False)
    pd.DataFrame({"ID": [n for n, _ in test], "Label": 0}).to_csv(data / "test.csv", index=False)
    # every test image becomes a pseudo-label, so the student really trains on extra images
    store = run_example("aoi", tmp_path, data, ["models.*.tta.views=[identity,hflip,vflip,hvflip,rot90]",
                                                "models.student.pseudo_label.threshold=null",
                                                "models.student.pseudo_label.top_fraction=1.0"], argv=["--distill"])
    assert store.models() == ["convnext", "deploy", "eva02", "student", "swinv2"]
    deploy = store.entry("deploy").meta
    assert deploy["config"]["distill"] == {"alpha": 0.7, "temperature": 2.0}
    assert deploy["n_extra_train"] == 12  # the unlabelled test images joined its training folds
    single = load_stack(store, "aoi_deploy")
    assert single.models == ["deploy"] and single.summary.class_rules == {2: 0.4}
    assert len(pd.read_csv(tmp_path / "submission_deploy.csv")) == 12
    assert store.entry("student").meta["n_extra_train"] == 12
    assert store.entry("convnext").meta["tta_views"] == ["identity", "hflip", "vflip", "hvflip", "rot90"]
    stack = load_stack(store, "aoi")
    assert stack.summary.class_rules == {2: 0.4}
    probs = stack.test_proba
    assert np.all(stack.test_labels[probs[:, 2] > 0.4] == 2)
    submission = pd.read_csv(tmp_path / "submission.csv")
    assert list(submission.columns) == ["ID", "Label"] and len(submission) == 12
    assert set(submission["ID"]) == {n for n, _ in test}
    assert (store.path / "report" / "report.html").is_file()
    assert "soft-vote weights" in capsys.readouterr().out


def _cifar_folder(root: Path) -> list[str]:
    classes = ["airplane", "automobile", "bird"]
    write_images(root / "train", [(f"{c}/{i:04d}.jpg", k) for k, c in enumerate(classes) for i in range(10)], seed=3)
    write_images(root / "test", [(f"{c}/{i:04d}.jpg", k) for k, c in enumerate(classes) for i in range(4)], seed=4)
    return classes


def test_cifar10_imagefolder_jpegs(tmp_path, capsys):
    data = tmp_path / "cifar"
    _cifar_folder(data)
    store = run_example("cifar10", tmp_path, data, ["models.*.regularization.ema_decay=0.9",
                                                    "models.*.schedule.warmup_epochs=0"])
    assert store.models() == ["resnet18_ms", "resnet26d", "vit_tiny"]
    assert store.entry("resnet18_ms").meta["config"]["augment"]["policy"] == "trivial"
    stack = load_stack(store)
    assert stack.info.held_out_test is not None  # test folders are labelled: scored, never fitted on
    submission = pd.read_csv(tmp_path / "submission.csv")
    assert list(submission.columns) == ["id", "label"] and len(submission) == 12
    assert set(submission["label"]) <= {"airplane", "automobile", "bird"}
    assert "held-out test: accuracy" in capsys.readouterr().out


def test_cifar10_python_batches_and_single_fold(tmp_path, capsys):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)

    def batch(n, offset):
        labels = [(i + offset) % 3 for i in range(n)]
        images = np.stack([np.kron(class_image(k, rng, 16), np.ones((2, 2, 1), np.uint8)) for k in labels])
        return {b"data": images.transpose(0, 3, 1, 2).reshape(n, -1), b"labels": labels}

    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(batch(6, i)))
    (root / "test_batch").write_bytes(pickle.dumps(batch(6, 0)))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog", b"frog"]}))
    settings = ["data.format=cifar10_batches", "models.*.regularization.ema_decay=null"]
    store = run_example("cifar10", tmp_path, tmp_path, settings, argv=["--fold", "0"])
    assert "still missing" in capsys.readouterr().out
    assert set(store.incomplete()) == {"resnet18_ms", "resnet26d", "vit_tiny"}
    store = run_example("cifar10", tmp_path, tmp_path, settings)
    assert len(store.models()) == 3 and len(store.train_ids) == 30 and store.classes == ["cat", "dog", "frog"]


def test_yandex(tmp_path, capsys):
    data = tmp_path / "yandex"
    train = [(f"img{i:04d}", i % 4) for i in range(32)]
    write_images(data / "train", [(f"{n}.jpg", y) for n, y in train], seed=5)
    write_images(data / "test", [(f"t{i:04d}.jpg", i % 4) for i in range(8)], seed=6)
    pd.DataFrame({"image_id": [n for n, _ in train], "label": [f"c{y}" for _, y in train]}).to_csv(
        data / "labels.csv", index=False)
    store = run_example("yandex", tmp_path, data, ["models.*.regularization.mixup_alpha=0.0",
                                                   "models.*.regularization.cutmix_alpha=0.0"],
                        argv=["--models", "miniconvnext,tiny_vit_no_ssl,enet_v2_m"])
    assert store.models() == ["enet_v2_m", "miniconvnext", "tiny_vit_no_ssl"]
    stack = load_stack(store, "yandex")
    assert stack.summary.blend_weights == {"catboost": 0.4, "lightgbm": 0.3, "soft_vote": 0.3}
    summary = stack.summary  # macro-F1 offsets were tuned; kept only if they help on held-out folds
    last = stack.report.iloc[-1]
    assert last["step"] == "+thresholds" and bool(last["kept"]) != summary.thresholds_rejected
    if last["kept"]:
        assert len(summary.class_offsets) == 4
    else:
        assert summary.class_offsets is None
    submission = pd.read_csv(tmp_path / "submission.csv")
    assert list(submission.columns) == ["image_id", "label"] and len(submission) == 8
    assert set(submission["image_id"]) == {f"t{i:04d}" for i in range(8)}
    assert "blend:" in capsys.readouterr().out


def test_cars(tmp_path, capsys):
    data = tmp_path / "cars"
    classes = [f"model_{k:03d}" for k in range(5)]
    write_images(data / "train", [(f"{c}/{i:03d}.jpg", k) for k, c in enumerate(classes) for i in range(6)], seed=7)
    write_images(data / "test", [(f"TEST_{i:05d}.jpg", i % 5) for i in range(10)], seed=8)
    store = run_example("cars", tmp_path, data, ["models.convnext_base.pooling=gem", "models.*.loss=focal"],
                        argv=["--models", "convnext_base,resnet152d"])
    assert store.models() == ["convnext_base", "resnet152d"]
    assert store.entry("resnet152d").meta["tta_views"] == ["identity", "hflip", "vflip", "hvflip", "rot90"]
    stack = load_stack(store)
    summary = stack.summary  # a final temperature is fitted, and kept only where it helps
    assert (summary.temperature is not None) != summary.temperature_rejected
    assert set(summary.blend_temperatures) == set(summary.blend_weights)  # every stage tempered first
    submission = pd.read_csv(tmp_path / "submission.csv")
    assert list(submission.columns) == ["ID", *classes] and len(submission) == 10
    np.testing.assert_allclose(submission[classes].sum(axis=1), 1.0, atol=1e-5)
    assert "final temperature:" in capsys.readouterr().out
    # resumable: a second run finds everything stored and trains nothing
    before = {n: store.entry(n).updated for n in store.models()}
    store = run_example("cars", tmp_path, data, ["models.convnext_base.pooling=gem", "models.*.loss=focal"],
                        argv=["--models", "convnext_base,resnet152d"])
    assert {n: store.entry(n).updated for n in store.models()} == before
