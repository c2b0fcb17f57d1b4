import pytest

from ensemble_kit.errors import ValidationError
from ensemble_kit.train import OptimizerConfig, RegularizationConfig, TrainConfig, TTAConfig


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(model="test_vit", img_size=32, optimizer=OptimizerConfig(name="sgd", lr=0.1),
                      regularization=RegularizationConfig(ema_decay=0.995), tta=TTAConfig(views=("identity", "hflip")))
    path = cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(path) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"modle": "x"}, r"Unknown config key\(s\) \['modle'\]"),
        ({"optimizer": {"learning_rate": 1}}, r"\['optimizer.learning_rate'\]"),
        ({"epochs": "ten"}, "'epochs' must be an integer"),
        ({"loss": "hinge"}, "'loss': Unknown loss 'hinge'"),
        ({"amp": "yes"}, "'amp' must be true or false"),
        ({"regularization": {"ema_decay": 1.5}}, "ema_decay"),
        ({"batch_size": 7, "regularization": {"mixup_alpha": 0.2}}, "even batch_size"),
        ({"tta": {"views": ["identity", "spin"]}}, "Unknown TTA view 'spin'"),
        ({"optimizer": 3}, "must be a mapping"),
        ({"epochs": 0}, r"'epochs' must be a finite number in \[1"),
        # values that used to pass silently
        ({"optimizer": {"lr": float("nan")}}, "'optimizer.lr' must be a finite number"),
        ({"optimizer": {"lr": float("inf")}}, "'optimizer.lr' must be a finite number"),
        ({"keep_checkpoints": 0}, "'keep_checkpoints'"),
        ({"keep_checkpoints": -1}, "'keep_checkpoints'"),
        ({"num_workers": -1}, "'num_workers'"),
        ({"regularization": {"label_smoothing": 2}}, "'regularization.label_smoothing'"),
        ({"regularization": {"mixup_alpha": -1}}, "'regularization.mixup_alpha'"),
        ({"epochs": 3, "schedule": {"warmup_epochs": 5}}, "'schedule.warmup_epochs' .* larger than 'epochs'"),
        ({"augment": {"hflip": 1.5}}, "'augment.hflip'"),
        ({"seed": -3}, "'seed'"),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig.from_dict(data)


def test_overrides():
    cfg = TrainConfig().with_overrides(["optimizer.lr=0.5", "tta.views=[identity, vflip]", "pooling=gem"])
    assert cfg.optimizer.lr == 0.5 and cfg.tta.views == ("identity", "vflip") and cfg.pooling == "gem"
    with pytest.raises(ValidationError, match="unknown key 'optimizer.lrr'"):
        TrainConfig().with_overrides(["optimizer.lrr=1"])
    with pytest.raises(ValidationError, match="key=value"):
        TrainConfig().with_overrides(["epochs"])
