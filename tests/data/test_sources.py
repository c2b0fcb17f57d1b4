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


# ---------------------------------------------------------------------- entries that are not image files
# Every entry named like an image is read or named in an error: none is dropped silently, none is
# opened when it is not a regular file inside the folder, and a FIFO never blocks.


def _plant(kind: str, path, outside):
    """Put an entry of ``kind`` at ``path``; ``outside`` is a folder outside the source's root."""
    import os
    import socket

    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dangling link":
        os.symlink(path.parent / "gone.png", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        return server
    elif kind == "directory":
        path.mkdir()
    elif kind == "link leaving the folder":
        _write(outside / "secret.png")
        os.symlink(outside / "secret.png", path)
    return None


ENTRY_KINDS = {"dangling link": r"a dangling symbolic link", "fifo": r"a FIFO", "socket": r"a socket",
               "directory": r"a directory", "link leaving the folder": r"a symbolic link leaving .*secret\.png"}


@pytest.fixture
def planted(tmp_path):
    servers = []

    def plant(kind, path):
        servers.append(_plant(kind, path, tmp_path / "outside"))

    yield plant
    for server in servers:
        if server is not None:
            server.close()


@pytest.mark.parametrize("kind", list(ENTRY_KINDS))
def test_an_image_folder_entry_that_is_no_image_file_is_named_not_dropped(tmp_path, planted, kind):
    from ensemble_kit.data import ImageDirSource

    root = tmp_path / "test"
    _write(root / "a.png")
    planted(kind, root / "b.jpg")
    with pytest.raises(ImageDecodeError, match=rf"ImageDirSource.*1 entry named like an image.*b\.jpg' "
                                               rf"\({ENTRY_KINDS[kind]}"):
        ImageDirSource(root)


@pytest.mark.parametrize("kind", list(ENTRY_KINDS))
def test_a_class_folder_entry_that_is_no_image_file_is_named_not_dropped(tmp_path, planted, kind):
    root = tmp_path / "train"
    _write(root / "cat" / "a.png")
    _write(root / "dog" / "c.png")
    planted(kind, root / "dog" / "b.jpg")
    with pytest.raises(ImageDecodeError, match=rf"ImageFolderSource.*dog/b\.jpg' \({ENTRY_KINDS[kind]}"):
        ImageFolderSource(root)


def test_every_offender_is_counted_and_the_first_few_named(tmp_path):
    import os

    from ensemble_kit.data import ImageDirSource

    _write(tmp_path / "ok.png")
    for i in range(8):
        os.mkfifo(tmp_path / f"pipe{i}.png")
    with pytest.raises(ImageDecodeError, match=r"8 entries named like an image") as raised:
        ImageDirSource(tmp_path)
    message = str(raised.value)
    assert all(f"pipe{i}.png" in message for i in range(5)) and "pipe7.png" not in message
    assert "and 3 more" in message


def test_links_to_image_files_inside_the_folder_are_read(tmp_path):
    import os

    from ensemble_kit.data import ImageDirSource

    _write(tmp_path / "flat" / "a.png")
    os.symlink("a.png", tmp_path / "flat" / "alias.png")  # relative link, inside the folder
    (tmp_path / "flat" / "notes.txt").write_text("not an image: left alone")
    os.symlink(tmp_path / "nowhere.txt", tmp_path / "flat" / "stale.txt")
    src = ImageDirSource(tmp_path / "flat")
    assert src.ids.tolist() == ["a", "alias"] and src.load(1).shape == (8, 10, 3)
    _write(tmp_path / "tree" / "cat" / "a.png")
    (tmp_path / "tree" / "dog").mkdir()
    os.symlink(tmp_path / "tree" / "cat" / "a.png", tmp_path / "tree" / "dog" / "b.png")  # across class folders
    os.symlink(tmp_path / "tree" / "cat", tmp_path / "tree" / "emu")  # a class folder linked inside the root
    tree = ImageFolderSource(tmp_path / "tree")
    assert tree.ids.tolist() == ["cat/a.png", "dog/b.png", "emu/a.png"] and tree.classes == ["cat", "dog", "emu"]


def test_an_image_folder_refuses_images_outside_class_folders_and_class_folders_linked_from_outside(tmp_path):
    import os

    _write(tmp_path / "train" / "cat" / "a.png")
    _write(tmp_path / "train" / "stray.png")
    with pytest.raises(ImageDecodeError, match=r"stray\.png' \(an image outside every class folder\).*one folder "
                                               r"per class \(\['cat'\]\)"):
        ImageFolderSource(tmp_path / "train")
    (tmp_path / "train" / "stray.png").unlink()
    (tmp_path / "train" / "x.jpg").mkdir()  # a folder named like an image where class folders are expected
    with pytest.raises(ImageDecodeError, match=r"x\.jpg' \(a directory named like an image"):
        ImageFolderSource(tmp_path / "train")
    (tmp_path / "train" / "x.jpg").rmdir()
    _write(tmp_path / "elsewhere" / "dog" / "d.png")
    os.symlink(tmp_path / "elsewhere" / "dog", tmp_path / "train" / "dog")
    with pytest.raises(ImageDecodeError, match=r"train/dog' \(a symbolic link leaving"):
        ImageFolderSource(tmp_path / "train")


def test_a_listed_path_that_is_no_image_file_says_what_it_is(tmp_path):
    import os

    _write(tmp_path / "img" / "a.png")
    os.mkfifo(tmp_path / "img" / "p.png")
    with pytest.raises(ImageDecodeError, match=r"1 image file\(s\) not found or not regular files: '.*p\.png' "
                                               r"\(a FIFO\)"):
        CsvImageSource(pd.DataFrame({"ID": ["a", "p"]}), tmp_path / "img", id_col="ID", ext=".png")


def test_an_image_swapped_for_a_fifo_after_its_check_never_blocks(tmp_path, monkeypatch):
    import os
    import stat
    import threading

    from ensemble_kit.data import decode
    from ensemble_kit.data.decode import check_image_header

    fifo = tmp_path / "swapped.png"
    os.mkfifo(fifo)
    regular = os.stat(__file__)

    # the first look (os.stat) still sees the regular file that was there; the open must not block
    real_stat = os.stat
    monkeypatch.setattr(decode.os, "stat", lambda path, *a, **k: regular if str(path) == str(fifo)
                        else real_stat(path, *a, **k))
    outcome = []

    def probe():
        try:
            check_image_header(fifo)
        except ImageDecodeError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # blocked in open(): release it (a writer appears, then leaves) before failing
        os.close(os.open(fifo, os.O_WRONLY))
        thread.join(timeout=10)
        pytest.fail("opening a FIFO blocked")
    assert stat.S_ISREG(regular.st_mode)
    assert outcome and "swapped.png" in str(outcome[0]) and "not a regular file" in str(outcome[0])
