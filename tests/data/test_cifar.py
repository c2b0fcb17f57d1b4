"""The offline CIFAR-10 batch reader admits only what the format needs: a crafted pickle never runs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from ensemble_kit.data.cifar import load_cifar10_batches
from ensemble_kit.errors import ValidationError


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_batches(root, *, n=4, meta=None):
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": [i % 3 for i in range(n)],
                 b"batch_label": name.encode(), b"filenames": [b"x.png"] * n}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps(meta or {b"label_names": [b"cat", b"dog", b"ship"]}))


def test_real_layout_loads(tmp_path):
    _write_batches(tmp_path / "cifar-10-batches-py")
    train, test = load_cifar10_batches(tmp_path)
    assert len(train) == 20 and len(test) == 4 and train.classes == ["cat", "dog", "ship"]
    assert train.load(0).shape == (32, 32, 3)


def test_crafted_meta_never_runs_code(tmp_path):
    marker = tmp_path / "code-ran"
    _write_batches(tmp_path / "b", meta={b"label_names": [_Payload(str(marker))]})
    with pytest.raises(ValidationError, match=r"batches.meta.*global io.open is not part of a CIFAR-10 batch"):
        load_cifar10_batches(tmp_path / "b")
    assert not marker.exists()


@pytest.mark.parametrize("fault", ["labels out of range", "object array", "not a dict", "link"])
def test_malformed_batches_are_named(tmp_path, fault):
    root = tmp_path / "b"
    _write_batches(root)
    target = root / "data_batch_2"
    if fault == "labels out of range":
        target.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 7]}))
    elif fault == "object array":
        target.write_bytes(pickle.dumps({b"data": np.array([b"x"] * 4, dtype=object), b"labels": [0] * 4}))
    elif fault == "not a dict":
        target.write_bytes(pickle.dumps([1, 2, 3]))
    else:
        os.replace(target, tmp_path / "elsewhere")
        os.symlink(tmp_path / "elsewhere", target)
    with pytest.raises(ValidationError, match="data_batch_2"):
        load_cifar10_batches(root)
