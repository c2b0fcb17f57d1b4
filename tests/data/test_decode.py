"""Every bit depth is scaled to 8 bits, never clipped; what cannot be decoded faithfully is refused by name."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from ensemble_kit.data import ImageFolderSource
from ensemble_kit.data.decode import check_image_header, decode_image, to_rgb
from ensemble_kit.errors import ImageDecodeError

GRADIENT = np.tile(np.linspace(0.0, 1.0, 64), (16, 1))  # mean 0.5


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    Image.fromarray((GRADIENT * 65535).round().astype(np.uint16)).save(tmp_path / "g.png")
    rgb = decode_image(tmp_path / "g.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 64, 3)
    assert abs(rgb.mean() - 127.5) < 1.0 and rgb.max() == 255 and rgb.min() == 0


def test_32_bit_integer_tiff_is_scaled_by_its_bit_depth(tmp_path):
    Image.fromarray((GRADIENT * (2**31 - 1)).astype(np.int32)).save(tmp_path / "g.tif")
    assert abs(decode_image(tmp_path / "g.tif").mean() - 127.5) < 1.0


def test_float_tiff_in_unit_range_is_scaled(tmp_path):
    Image.fromarray(GRADIENT.astype(np.float32)).save(tmp_path / "f.tif")
    assert abs(decode_image(tmp_path / "f.tif").mean() - 127.5) < 1.0


def test_float_tiff_outside_unit_range_is_refused(tmp_path):
    Image.fromarray((GRADIENT * 300).astype(np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageDecodeError, match=r"f.tif.*values in \[0, 300\]"):
        decode_image(tmp_path / "f.tif")


def test_decompression_bomb_is_a_named_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match="bomb.png.*too large"):
        decode_image(tmp_path / "bomb.png")


def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageDecodeError, match="pipe.png.*not a regular file"):
        check_image_header(tmp_path / "pipe.png")


def test_to_rgb_scales_uint16_and_refuses_floats_out_of_range():
    assert to_rgb(np.full((2, 2), 65535, np.uint16)).max() == 255
    with pytest.raises(ImageDecodeError, match=r"\[0, 1\]"):
        to_rgb(np.full((2, 2), 2.0))


def test_check_lists_every_bad_file_before_training(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / cls / "ok.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "b" / "text.jpg").write_text("hello")
    source = ImageFolderSource(tmp_path)
    with pytest.raises(ImageDecodeError, match=r"2 image file\(s\) cannot be used") as raised:
        source.check()
    assert "broken.png" in str(raised.value) and "text.jpg" in str(raised.value)


def test_train_cv_checks_images_before_the_first_epoch(tmp_path, monkeypatch):
    from ensemble_kit import LogitStore
    from ensemble_kit.train import TrainConfig, train_cv
    from ensemble_kit.train.trainer import _FoldRun

    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / cls / f"{i}.png")
    (tmp_path / "img" / "b" / "3.png").write_bytes(b"\x89PNG broken")
    source = ImageFolderSource(tmp_path / "img")
    store = LogitStore.create(tmp_path / "s", source.ids, source.labels, source.classes, n_folds=2)
    started = []
    monkeypatch.setattr(_FoldRun, "run", lambda self: started.append(self.fold))
    with pytest.raises(ImageDecodeError, match="3.png"):
        train_cv(TrainConfig(model="plain_cnn", img_size=8, epochs=1), store, source, name="m")
    assert started == []
