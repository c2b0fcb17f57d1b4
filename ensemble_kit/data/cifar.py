"""CIFAR-10 in its original "python version" layout (``cifar-10-batches-py``), read offline."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ensemble_kit.data.sources import ArrayImageSource
from ensemble_kit.errors import ValidationError

_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def load_cifar10_batches(root: str | Path) -> tuple[ArrayImageSource, ArrayImageSource]:
    """Train (50,000) and test (10,000) sources from the pickled CIFAR-10 batches.

    Parameters
    ----------
    root : path
        The ``cifar-10-batches-py`` folder (or a folder containing it) with ``data_batch_1..5``,
        ``test_batch`` and ``batches.meta``. Nothing is downloaded.

    Returns
    -------
    train, test : ArrayImageSource
        Ids ``train_00000`` / ``test_00000`` in file order; classes are the meta file's label names.
        Both are labelled (the test labels are for scoring, never for fitting).
    """
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    needed = (*_TRAIN_BATCHES, "test_batch", "batches.meta")
    missing = [name for name in needed if not (root / name).is_file()]
    if missing:
        raise ValidationError(f"CIFAR-10 batches: {str(root)!r} lacks {missing}; expected the extracted "
                              "cifar-10-python.tar.gz (folder cifar-10-batches-py).")
    classes = [name.decode() if isinstance(name, bytes) else name for name in _unpickle(root / "batches.meta")[b"label_names"]]

    def read(names: tuple[str, ...], prefix: str) -> ArrayImageSource:
        images, labels = [], []
        for name in names:
            batch = _unpickle(root / name)
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels += list(batch[b"labels"])
        stacked = np.concatenate(images)
        ids = [f"{prefix}_{i:05d}" for i in range(len(stacked))]
        return ArrayImageSource(stacked, [classes[k] for k in labels], ids=ids, classes=classes)

    return read(_TRAIN_BATCHES, "train"), read(("test_batch",), "test")


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValidationError(f"CIFAR-10 batch {str(path)!r} cannot be read: {exc}") from exc
