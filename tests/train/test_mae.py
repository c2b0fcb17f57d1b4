"""MAE pre-training: the loss falls, the encoder loads whole into a fine-tune, a killed run resumes identically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from ensemble_kit.cli.main import main
from ensemble_kit.data import ArrayImageSource
from ensemble_kit.data.embedded import load_digits_images
from ensemble_kit.errors import CheckpointError, ValidationError
from ensemble_kit.train import MAEConfig, build_model, pretrain_mae
from ensemble_kit.train import mae as mae_module

TINY_VIT = {"patch_size": 4, "depth": 2, "embed_dim": 48, "num_heads": 2}


def _cfg(**changes) -> MAEConfig:
    base = dict(model="vit_tiny_patch16_224", img_size=16, model_kwargs=TINY_VIT, epochs=2, batch_size=16,
                decoder_dim=32, decoder_depth=1, decoder_heads=2, lr=2e-3, warmup_epochs=0.5, device="cpu",
                cpu_threads=1, seed=3)
    base.update(changes)
    return MAEConfig(**base)


@pytest.fixture(scope="module")
def digits() -> ArrayImageSource:
    train, _ = load_digits_images(image_size=16, test_fraction=0.2)
    return ArrayImageSource(train.images[:96])


def test_reconstruction_loss_falls(digits, tmp_path) -> None:
    result = pretrain_mae(_cfg(epochs=8), digits, tmp_path)
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,lr,seconds" and len(history) == 9
    assert MAEConfig.from_dict(yaml.safe_load((tmp_path / "mae_config.yaml").read_text())) == _cfg(epochs=8)


def test_encoder_weights_load_whole_into_a_fine_tune(digits, tmp_path) -> None:
    result = pretrain_mae(_cfg(epochs=1), digits, tmp_path)
    saved = load_file(str(result.encoder_path))
    model = build_model("vit_tiny_patch16_224", num_classes=10, img_size=16, model_kwargs=TINY_VIT,
                        pretrained_path=str(result.encoder_path))
    own = model.state_dict()
    assert set(own) - set(saved) == {"head.weight", "head.bias"}  # only the new classifier is left at init
    for key, value in saved.items():
        assert torch.equal(own[key], value), key
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)

    with pytest.raises(CheckpointError, match="other shape") as wider:
        build_model("vit_tiny_patch16_224", num_classes=10, img_size=16, model_kwargs={**TINY_VIT, "embed_dim": 64},
                    pretrained_path=str(result.encoder_path))
    assert "missing 0 ()" in str(wider.value) and "unexpected 0 ()" in str(wider.value)
    with pytest.raises(CheckpointError, match=r"missing 12 \(blocks\.2\."):
        build_model("vit_tiny_patch16_224", num_classes=10, img_size=16, model_kwargs={**TINY_VIT, "depth": 3},
                    pretrained_path=str(result.encoder_path))
    save_file({**saved, "stray.weight": torch.zeros(3)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected 1 \(stray.weight\)"):
        build_model("vit_tiny_patch16_224", num_classes=10, img_size=16, model_kwargs=TINY_VIT,
                    pretrained_path=str(tmp_path / "extra.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot be read"):
        build_model("vit_tiny_patch16_224", num_classes=10, img_size=16, model_kwargs=TINY_VIT,
                    pretrained_path=str(tmp_path / "junk.safetensors"))


def test_a_killed_run_resumes_to_identical_weights(digits, tmp_path, monkeypatch) -> None:
    straight = pretrain_mae(_cfg(epochs=3), digits, tmp_path / "straight")

    real_prune = mae_module.prune_checkpoints

    def killed_after_first_epoch(*args, **kwargs):
        real_prune(*args, **kwargs)
        raise KeyboardInterrupt  # as a kill right after epoch 1's checkpoint was published

    monkeypatch.setattr(mae_module, "prune_checkpoints", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        pretrain_mae(_cfg(epochs=3), digits, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "encoder.safetensors").exists()
    monkeypatch.setattr(mae_module, "prune_checkpoints", real_prune)
    resumed = pretrain_mae(_cfg(epochs=3), digits, tmp_path / "resumed")

    a, b = load_file(str(straight.encoder_path)), load_file(str(resumed.encoder_path))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in straight.history] == [r["loss"] for r in resumed.history]
    with pytest.raises(ValidationError, match="different config"):
        pretrain_mae(_cfg(epochs=4), digits, tmp_path / "resumed")


def test_config_errors_are_named(digits, tmp_path) -> None:
    with pytest.raises(ValidationError, match="'mask_ratio'"):
        _cfg(mask_ratio=1.0)
    with pytest.raises(ValidationError, match="'decoder_dim'"):
        _cfg(decoder_dim=30, decoder_heads=4)
    with pytest.raises(ValidationError, match="ViT-style"):
        pretrain_mae(_cfg(model="resnet10t", model_kwargs=None), digits, tmp_path)
    with pytest.raises(ValidationError, match="unknown timm model"):
        pretrain_mae(_cfg(model="vit_nonexistent", model_kwargs=None), digits, tmp_path)


def test_cli_pretrain_on_a_projects_images(tmp_path, capsys) -> None:
    config = tmp_path / "pretrain.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "mae"), "data": {"format": "digits", "image_size": 16},
        "mae": {**_cfg(epochs=1).to_dict(), "model_kwargs": TINY_VIT}}))
    assert main(["pretrain", str(config), "--set", "mae.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "epoch 2" in out and "encoder.safetensors" in out
    saved = yaml.safe_load((tmp_path / "mae" / "pretrain.yaml").read_text())
    assert saved["mae"]["epochs"] == 2 and saved["images"] == "train+test"
    assert (tmp_path / "mae" / "encoder.safetensors").is_file()
    config.write_text(yaml.safe_dump({"out": str(tmp_path / "x"), "mae": {"mask_ratio": 2}}))
    assert main(["pretrain", str(config)]) != 0
    assert "mask_ratio" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_planted_or_damaged_checkpoint_is_a_named_error(digits, tmp_path) -> None:
    out = tmp_path / "received"
    pretrain_mae(_cfg(epochs=1), digits, out)
    (out / "checkpoints" / "epoch_0000" / "state.json").write_bytes(b"\xff{not json")
    with pytest.raises(CheckpointError, match="cannot be read"):
        pretrain_mae(_cfg(epochs=2), digits, out)
    planted = tmp_path / "planted"
    (planted / "checkpoints").mkdir(parents=True)
    (planted / "checkpoints" / "epoch_0000.pt").write_bytes(b"\x80\x04crafted pickle")
    with pytest.raises(CheckpointError, match="pickle checkpoints"):
        pretrain_mae(_cfg(epochs=1), digits, planted)
    assert not (planted / "encoder.safetensors").exists()
