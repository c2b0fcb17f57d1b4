import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ensemble_kit.data import ArrayImageSource, ConcatSource, CsvImageSource, ImageDecodeError, ImageFolderSource
from ensemble_kit.errors import ValidationError


def _write(path, mode="RGB", size=(10, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=(10, 20, 30, 40)[: len(mode)] if mode != "L" else 50).save(path)


def test_array_source_converts_gray_and_rgba():
    gray = ArrayImageSource(np.full((2, 5, 5), 7, np.uint8), [0, 1])
    assert gray.load(0).shape == (5, 5, 3) and gray.load(0)[0, 0].tolist() == [7, 7, 7]
    rgba = ArrayImageSource(np.full((1, 4, 4, 4), 9, np.uint8))
    assert rgba.load(0).shape == (4, 4, 3) and rgba.labels is None
    floats = ArrayImageSource(np.full((1, 2, 2, 3), 0.5))
    assert floats.load(0)[0, 0, 0] == 128  # 0.5 * 255, rounded


def test_image_folder(tmp_path):
    _write(tmp_path / "cat" / "a.png")
    _write(tmp_path / "cat" / "b.jpg", mode="L")
    _write(tmp_path / "dog" / "c.png", mode="RGBA")
    src = ImageFolderSource(tmp_path)
    assert src.classes == ["cat", "dog"] and src.targets.tolist() == [0, 0, 1]
    assert src.labels.tolist() == ["cat", "cat", "dog"]
    assert src.ids.tolist() == ["cat/a.png", "cat/b.jpg", "dog/c.png"]
    assert all(src.load(i).shape == (8, 10, 3) for i in range(3))
    with pytest.raises(ValidationError, match=r"folders \['dog'\] are not in classes"):
        ImageFolderSource(tmp_path, classes=["cat"])


def test_csv_source_and_its_errors(tmp_path):
    for name in ["a", "b", "c"]:
        _write(tmp_path / "img" / f"{name}.png")
    frame = pd.DataFrame({"ID": ["a", "b", "c"], "Label": [2, 0, 2]})
    src = CsvImageSource(frame, tmp_path / "img", id_col="ID", label_col="Label", ext=".png", cache=True)
    assert src.classes == [0, 2] and src.targets.tolist() == [1, 0, 1] and src.labels.tolist() == [2, 0, 2]
    assert src.load(1) is src.load(1)  # cached
    unlabelled = CsvImageSource(frame[["ID"]], tmp_path / "img", id_col="ID", ext=".png")
    assert unlabelled.labels is None
    with pytest.raises(ValidationError, match=r"missing column\(s\) \['Label'\]"):
        CsvImageSource(frame[["ID"]], tmp_path / "img", id_col="ID", label_col="Label")
    with pytest.raises(ValidationError, match=r"duplicate ids \['a'\]"):
        CsvImageSource(pd.concat([frame, frame.iloc[:1]]), tmp_path / "img", id_col="ID", label_col="Label", ext=".png")
    with pytest.raises(ImageDecodeError, match=r"1 image file\(s\) not found.*zz.png"):
        CsvImageSource(pd.DataFrame({"ID": ["a", "zz"]}), tmp_path / "img", id_col="ID", ext=".png")
    with pytest.raises(ValidationError, match=r"labels \[5\] are not in classes \[0, 2\]"):
        CsvImageSource(frame.assign(Label=[0, 2, 5]), tmp_path / "img", id_col="ID", label_col="Label", ext=".png",
                       classes=[0, 2])
    (tmp_path / "img" / "bad.png").write_bytes(b"not an image")
    broken = CsvImageSource(pd.DataFrame({"ID": ["a", "bad"]}), tmp_path / "img", id_col="ID", ext=".png")
    with pytest.raises(ImageDecodeError, match="bad.png"):
        broken.validate()


def test_concat_source():
    a = ArrayImageSource(np.zeros((2, 3, 3), np.uint8), [0, 1], ids=["a0", "a1"], classes=[0, 1])
    b = ArrayImageSource(np.ones((1, 3, 3), np.uint8), [1], ids=["b0"], classes=[0, 1])
    both = ConcatSource(a, b)
    assert both.ids.tolist() == ["a0", "a1", "b0"] and both.labels.tolist() == [0, 1, 1]
    assert both.load(2)[0, 0, 0] == 1


def test_sources_plug_into_store_create(tmp_path):
    from ensemble_kit import LogitStore

    for name in ["a", "b", "c", "d"]:
        _write(tmp_path / "img" / f"{name}.png")
    frame = pd.DataFrame({"ID": ["a", "b", "c", "d"], "Label": ["ok", "scratch", "ok", "scratch"]})
    src = CsvImageSource(frame, tmp_path / "img", id_col="ID", label_col="Label", ext=".png")
    store = LogitStore.create(tmp_path / "s", train_ids=src.ids, y=src.labels, classes=src.classes, n_folds=2)
    assert store.classes == ["ok", "scratch"] and store.y.tolist() == src.targets.tolist()


def test_image_folder_ids_are_stems_when_asked_and_collisions_are_named(tmp_path):
    from ensemble_kit.errors import ValidationError

    _write(tmp_path / "a" / "cat" / "x1.png")
    _write(tmp_path / "a" / "dog" / "x2.png")
    assert ImageFolderSource(tmp_path / "a", ids="stem").ids.tolist() == ["x1", "x2"]
    assert ImageFolderSource(tmp_path / "a").ids.tolist() == ["cat/x1.png", "dog/x2.png"]
    _write(tmp_path / "b" / "cat" / "0000.png")
    _write(tmp_path / "b" / "dog" / "0000.png")
    with pytest.raises(ValidationError, match=r"not unique across class folders.*data.test_ids: path"):
        ImageFolderSource(tmp_path / "b", ids="stem")
    assert ImageFolderSource(tmp_path / "a", ids="auto").ids.tolist() == ["x1", "x2"]
    assert ImageFolderSource(tmp_path / "b", ids="auto").ids.tolist() == ["cat/0000.png", "dog/0000.png"]
