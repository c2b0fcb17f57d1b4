"""``model_kwargs`` reach timm only as plain architecture arguments, from a YAML file or a bundle.

An exported fold model's ``model.json`` holds its training config, ``model_kwargs`` included, and
a bundle received from elsewhere is untrusted: a planted ``checkpoint_path`` must never make timm
read a file outside it, a planted ``num_classes`` must be a named error, not a raw TypeError.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from ensemble_kit import LogitStore
from ensemble_kit.errors import ArtifactError, ValidationError
from ensemble_kit.train import TrainConfig, train_cv
from ensemble_kit.train.config import MAEConfig, check_model_kwargs
from ensemble_kit.train.export import EXPORT_DIR, load_fold_model
from ensemble_kit.train.models import build_model
from helpers import tiny_image_data

TINY = {"model": "resnet10t", "img_size": 16, "epochs": 1, "batch_size": 8, "device": "cpu", "cpu_threads": 1,
        "model_kwargs": {"stem_width": 16}}

# Paths whose opening by this process is recorded (an audit hook sees every Python-level open,
# builtins.open and os.open alike, whichever library makes it). Hooks cannot be removed: this one
# only compares paths, and only those registered by a test.
_WATCHED: set[str] = set()
_OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if os.path.abspath(path) in _WATCHED:
            _OPENED.append(path)


sys.addaudithook(_audit)


@pytest.fixture
def watch():
    """Register paths whose opening is recorded; yields the list of recorded opens."""

    def add(path: Path) -> Path:
        _WATCHED.add(os.path.abspath(path))
        return path

    _OPENED.clear()
    yield add
    _WATCHED.clear()
    _OPENED.clear()


@pytest.fixture(scope="module")
def fold_model(tmp_path_factory) -> tuple[Path, TrainConfig]:
    """A real fold model: one epoch of fold 0 of a tiny resnet10t, exported by the trainer."""
    root = tmp_path_factory.mktemp("kwargs")
    train, _, _ = tiny_image_data(n_train=24, n_test=3)
    store = LogitStore.create(root / "store", train.ids, train.labels, train.classes, n_folds=2, seed=0)
    cfg = TrainConfig.from_dict(TINY)
    train_cv(cfg, store, train, name="m", folds=[0])
    return store.workspace.fold_dir("m", 0) / EXPORT_DIR, cfg


def _planted_checkpoint(folder: Path, cfg: TrainConfig) -> Path:
    """A valid checkpoint of the same architecture outside ``folder``: timm would load it silently."""
    outside = folder.parent / "outside"
    outside.mkdir(exist_ok=True)
    model = build_model(cfg.model, num_classes=3, img_size=cfg.img_size, model_kwargs=cfg.model_kwargs)
    target = outside / "planted.pth"
    torch.save({k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in model.state_dict().items()},
               target)
    return target


def _edit_model_json(folder: Path, **model_kwargs) -> None:
    """Add ``model_kwargs`` to the saved config, and re-seal the manifest's own checksum when it has
    one: a checksum guards against damage, not against whoever wrote the folder, so a hostile
    bundle passes every checksum."""
    manifest = folder / "model.json"
    document = json.loads(manifest.read_text())
    document["config"]["model_kwargs"] = {**(document["config"]["model_kwargs"] or {}), **model_kwargs}
    if "manifest_checksum" in document:
        from ensemble_kit.store._artifacts import manifest_checksum

        document["manifest_checksum"] = manifest_checksum(document)
    manifest.write_text(json.dumps(document))


def test_the_untouched_export_loads(fold_model):
    folder, cfg = fold_model
    model, info = load_fold_model(folder)
    assert info.config == cfg and info.config.model_kwargs == {"stem_width": 16}
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 3)


@pytest.mark.parametrize("key", ["checkpoint_path", "pretrained_cfg_overlay", "pretrained_cfg", "num_classes",
                                 "pretrained", "drop_rate", "features_only", "cache_dir", "hidden_path"])
def test_a_planted_model_argument_is_refused_by_name_and_nothing_outside_is_read(fold_model, tmp_path, watch, key):
    source, cfg = fold_model
    folder = tmp_path / "model"
    shutil.copytree(source, folder)
    planted = watch(_planted_checkpoint(folder, cfg))
    value = {"checkpoint_path": str(planted), "pretrained_cfg_overlay": {"file": str(planted)},
             "pretrained_cfg": {"file": str(planted)}, "num_classes": 7, "pretrained": True, "drop_rate": 0.5,
             "features_only": True, "cache_dir": str(planted.parent), "hidden_path": str(planted)}[key]
    _edit_model_json(folder, **{key: value})
    with pytest.raises(ArtifactError, match=rf"model\.json.*'model_kwargs\.{key}' is not accepted") as raised:
        load_fold_model(folder)
    assert isinstance(raised.value.__cause__, ValidationError)
    assert _OPENED == []


def test_a_bundle_with_a_planted_checkpoint_path_names_the_file_and_reads_nothing_outside(fold_model, tmp_path,
                                                                                          watch):
    from ensemble_kit.project.predict import Predictor

    source, cfg = fold_model
    bundle = Predictor({"m": [source]}, stack=None, classes=[0, 1, 2], device="cpu").save_bundle(tmp_path / "bundle")
    Predictor.load(bundle, device="cpu")  # the untouched bundle loads
    model_json = bundle / "models" / "m" / "fold0" / "model.json"
    planted = watch(_planted_checkpoint(tmp_path / "x", cfg))
    _edit_model_json(model_json.parent, checkpoint_path=str(planted))
    message = rf"{re.escape(str(model_json))}.*'model_kwargs\.checkpoint_path' is not accepted.*pretrained_path"
    with pytest.raises(ArtifactError, match=message):
        Predictor.load(bundle, device="cpu")
    assert _OPENED == []


def test_build_model_checks_again_what_reaches_timm(tmp_path, watch):
    # a config's dict can be changed after it was validated, and callers may build models themselves
    cfg = TrainConfig.from_dict(TINY)
    planted = watch(_planted_checkpoint(tmp_path / "m", cfg))
    cfg.model_kwargs["checkpoint_path"] = str(planted)
    with pytest.raises(ValidationError, match=r"'model_kwargs\.checkpoint_path' is not accepted"):
        build_model(cfg.model, num_classes=3, img_size=16, model_kwargs=cfg.model_kwargs)
    with pytest.raises(ValidationError, match=r"'model_kwargs\.num_classes' is not accepted.*store's classes"):
        build_model("resnet10t", num_classes=3, model_kwargs={"num_classes": 5})
    assert _OPENED == []


@pytest.mark.parametrize("kwargs, message", [
    ({"checkpoint_path": "w.pth"}, r"'model_kwargs\.checkpoint_path' is not accepted: it makes timm read a file"),
    ({"num_classes": 10}, r"'model_kwargs\.num_classes' is not accepted"),
    ({"drop_path_rate": 0.1}, r"'model_kwargs\.drop_path_rate'.*regularization\.drop_path_rate"),
    ({"img_size": 32}, r"'model_kwargs\.img_size'.*config key 'img_size'"),
    ({"in_chans": 1}, r"'model_kwargs\.in_chans'.*RGB"),
    ({"act_layer": "/etc/passwd"}, r"'model_kwargs\.act_layer'.*never a path"),
    ({"act_layer": "https://example.com/x"}, r"'model_kwargs\.act_layer'.*never a path, file name or URL"),
    ({"act_layer": "weights.pth"}, r"'model_kwargs\.act_layer'.*never a path, file name or URL"),
    ({"depths": [2, [2]]}, r"'model_kwargs\.depths'.*flat"),
    ({"block": {"file": "x"}}, r"'model_kwargs\.block'.*a dict is not a plain"),
    ({"mlp_ratio": float("inf")}, r"'model_kwargs\.mlp_ratio'.*finite"),
    ({"not-a-name": 1}, r"'not-a-name' is not a keyword argument name"),
])
def test_a_yaml_config_gets_the_same_rule(tmp_path, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig.from_dict({**TINY, "model_kwargs": kwargs})
    with pytest.raises(ValidationError, match=message):
        MAEConfig.from_dict({"model_kwargs": kwargs})


def test_global_pool_is_refused_where_gem_pooling_would_ignore_it():
    assert TrainConfig(model_kwargs={"global_pool": "max"}).model_kwargs == {"global_pool": "max"}
    with pytest.raises(ValidationError, match=r"'model_kwargs\.global_pool' would be ignored: pooling 'gem'"):
        TrainConfig(model_kwargs={"global_pool": "max"}, pooling="gem")


def test_plain_architecture_arguments_still_build():
    kwargs = {"patch_size": 4, "depth": 1, "embed_dim": 48, "num_heads": 2, "mlp_ratio": 2.0, "class_token": True,
              "global_pool": "avg", "act_layer": "gelu", "reg_tokens": 0, "qkv_bias": False, "init_values": None}
    cfg = TrainConfig(model="vit_tiny_patch16_224", img_size=16, model_kwargs=kwargs)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    model = build_model(cfg.model, num_classes=3, img_size=16, model_kwargs=cfg.model_kwargs)
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 3)
    check_model_kwargs({"depths": [1, 1, 2], "dims": (8, 16)})


@pytest.mark.parametrize("edit", [
    pytest.param({"model_kwargs": {"act_layer": "nope"}}, id="unknown activation (KeyError in timm)"),
    pytest.param({"model_kwargs": {"stem_width": -5}}, id="negative width (RuntimeError in torch)"),
    pytest.param({"model_kwargs": {"output_stride": 7}}, id="odd output stride (AssertionError in timm)"),
    pytest.param({"model_kwargs": {"stem_width": 4096}, "match": "bytes of weights"}, id="larger than its weights"),
    pytest.param({"img_size": 30000}, id="an input size that would allocate gigabytes"),
])
def test_an_edited_architecture_is_a_named_error_before_any_memory_is_spent(fold_model, tmp_path, edit):
    from helpers import reseal

    folder, _ = fold_model
    copy = shutil.copytree(folder, tmp_path / "model")
    document = json.loads((copy / "model.json").read_text())
    edit = dict(edit)
    match = edit.pop("match", "model.json")  # larger than its weights: refused before it is built for real
    for key, value in edit.items():
        document["config"][key] = {**document["config"].get(key, {}), **value} if isinstance(value, dict) else value
    reseal(copy, "model.json", document)
    with pytest.raises(ArtifactError, match=match):
        load_fold_model(copy)


def test_a_normalisation_too_large_for_a_float_is_named(fold_model, tmp_path):
    from helpers import reseal

    folder, _ = fold_model
    copy = shutil.copytree(folder, tmp_path / "model")
    document = json.loads((copy / "model.json").read_text())
    document["std"] = [10 ** 400] * 3
    reseal(copy, "model.json", document)
    with pytest.raises(ArtifactError, match="model.json"):
        load_fold_model(copy)
