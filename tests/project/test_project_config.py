import pytest

from ensemble_kit.errors import ValidationError
from ensemble_kit.project import ProjectConfig

BASE = {"store": "s", "models": {"a": {"model": "resnet10t", "epochs": 2}, "b": {"model": "test_vit"}}}


def test_defaults_roundtrip_and_resolved_yaml(tmp_path):
    cfg = ProjectConfig.from_dict(BASE)
    assert [m.name for m in cfg.models] == ["a", "b"]
    assert cfg.model("a").train.epochs == 2 and cfg.model("b").train.epochs == 20
    assert cfg.stack.recipe == "full" and cfg.folds.n_folds == 5 and cfg.data.format == "digits"
    path = cfg.to_yaml(tmp_path / "p.yaml")
    assert ProjectConfig.from_yaml(path) == cfg


def test_overrides_with_wildcards_and_sections():
    cfg = ProjectConfig.from_dict(BASE, overrides=["models.*.img_size=48", "models.a.optimizer.lr=0.5",
                                                   "stack.metric=f1_macro", "stack.models=[a]", "folds.n_folds=3"])
    assert [m.train.img_size for m in cfg.models] == [48, 48]
    assert cfg.model("a").train.optimizer.lr == 0.5 and cfg.model("b").train.optimizer.lr == 1e-3
    assert cfg.stack.metric == "f1_macro" and cfg.stack.models == ("a",) and cfg.folds.n_folds == 3


@pytest.mark.parametrize("data, overrides, message", [
    ({**BASE, "stak": {}}, [], r"\['stak'\]"),
    ({**BASE, "models": {"a": {"epochz": 1}}}, [], r"models\.a\.epochz"),
    ({**BASE, "models": {"a": {"optimizer": {"lrr": 1}}}}, [], r"models\.a\.optimizer\.lrr"),
    ({**BASE, "models": {"a": {"epochs": "many"}}}, [], r"'models\.a\.epochs' must be an integer"),
    ({**BASE, "stack": {"recipe": "magic"}}, [], r"'stack\.recipe': Unknown recipe 'magic'"),
    ({**BASE, "stack": {"models": ["a", "zzz"]}}, [], r"stack\.models.*zzz"),
    ({**BASE, "data": {"format": "csv", "train": "t.csv"}}, [], r"data\.train_images"),
    ({**BASE, "folds": {"n_folds": 1}}, [], r"folds\.n_folds"),
    ({**BASE, "models": {}}, [], r"'models'"),
    ({"models": BASE["models"]}, [], r"'store'"),
    ({**BASE, "models": {"a": {}, "b": {"pseudo_label": {"teachers": ["nobody"]}}}}, [], r"pseudo_label\.teachers.*nobody"),
    ({**BASE, "models": {"a": {"pseudo_label": {"teachers": ["a"]}}}}, [], "its own pseudo-label teacher"),
    (BASE, ["models.*.epochz=1"], r"unknown key 'models\.a\.epochz'"),
    (BASE, ["models.c.epochs=1"], r"unknown key 'models\.c'"),
    (BASE, ["stack.recipe"], "must look like key=value"),
    (BASE, ["models.a.epochs=-1"], r"'epochs' must be a finite number in \[1"),
])
def test_bad_config_names_the_key(data, overrides, message):
    with pytest.raises(ValidationError, match=message):
        ProjectConfig.from_dict(data, overrides=overrides)


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("store: s\nmodels: {a: {model: resnet10t, lr: 1}}\n")
    with pytest.raises(ValidationError, match=r"bad\.yaml.*models\.a\.lr"):
        ProjectConfig.from_yaml(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("store: [unclosed\n")
    with pytest.raises(ValidationError, match="not valid YAML"):
        ProjectConfig.from_yaml(broken)
    with pytest.raises(ValidationError, match="does not exist"):
        ProjectConfig.from_yaml(tmp_path / "missing.yaml")


def test_example_configs_are_valid():
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    for name in ("aoi", "cifar10", "yandex", "cars"):
        cfg = ProjectConfig.from_yaml(examples / name / "config.yaml")
        assert len(cfg.models) >= 3, name


@pytest.mark.parametrize("name", ["../../x", "lgbm\n", "a b"])
def test_model_names_that_are_not_one_file_name_are_refused_before_anything_is_written(tmp_path, monkeypatch, name):
    from ensemble_kit.errors import ValidationError
    from ensemble_kit.project import ProjectConfig

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="Invalid model name"):
        ProjectConfig.from_dict({"store": "runs/s", "models": {name: {"model": "resnet10t"}}})
    assert list(tmp_path.iterdir()) == []


def test_model_names_differing_only_in_case_are_refused():
    from ensemble_kit.errors import ValidationError
    from ensemble_kit.project import ProjectConfig

    with pytest.raises(ValidationError, match="differ only in case"):
        ProjectConfig.from_dict({"store": "s", "models": {"ResNet": {}, "resnet": {}}})


def test_pretrain_overrides_reach_keys_the_file_leaves_out_and_a_typo_gets_a_did_you_mean():
    from ensemble_kit.project.config import PretrainConfig

    cfg = PretrainConfig.from_dict({"out": "o", "mae": {"model": "vit_tiny_patch16_224"}},
                                   overrides=["mae.img_size=64", "data.format=folder", "data.train=t", "images=train"])
    assert (cfg.mae.img_size, cfg.data.format, cfg.data.train, cfg.images) == (64, "folder", "t", "train")
    for typo, suggestion in (("mae.img_sise=64", "mae.img_size"), ("data.formatt=folder", "data.format"),
                             ("imagez=train", "images")):
        with pytest.raises(ValidationError, match=f"Did you mean '{suggestion}'"):
            PretrainConfig.from_dict({"out": "o"}, overrides=[typo])
