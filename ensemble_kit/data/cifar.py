"""CIFAR-10 in its original "python version" layout (``cifar-10-batches-py``), read offline."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ensemble_kit.data.sources import ArrayImageSource
from ensemble_kit.errors import UnsafePathError, ValidationError
from ensemble_kit.store._files import open_regular

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
    meta_path = root / "batches.meta"
    names_field = _unpickle(meta_path).get(b"label_names")
    if not isinstance(names_field, list) or not names_field or not all(isinstance(n, (bytes, str)) for n in names_field):
        raise ValidationError(f"CIFAR-10 batch {str(meta_path)!r}: b'label_names' must be a list of class names.")
    classes = [name.decode() if isinstance(name, bytes) else name for name in names_field]

    def read(names: tuple[str, ...], prefix: str) -> ArrayImageSource:
        images, labels = [], []
        for name in names:
            path = root / name
            batch = _unpickle(path)
            data, batch_labels = batch.get(b"data"), batch.get(b"labels")
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise ValidationError(f"CIFAR-10 batch {str(path)!r}: b'data' must be a uint8 array of shape (N, 3072).")
            if (not isinstance(batch_labels, list) or len(batch_labels) != len(data)
                    or not all(isinstance(k, int) and 0 <= k < len(classes) for k in batch_labels)):
                raise ValidationError(f"CIFAR-10 batch {str(path)!r}: b'labels' must list one class index in "
                                      f"0..{len(classes) - 1} per image.")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels += batch_labels
        stacked = np.concatenate(images)
        ids = [f"{prefix}_{i:05d}" for i in range(len(stacked))]
        return ArrayImageSource(stacked, [classes[k] for k in labels], ids=ids, classes=classes)

    return read(_TRAIN_BATCHES, "train"), read(("test_batch",), "test")


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR-10 batch holds: builtin containers, bytes/str/int and numpy arrays.

    ``find_class`` is the only way a pickle can reach code; every global but the three numpy
    array constructors is refused, so a crafted batch file cannot run anything.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not part of a CIFAR-10 batch")


def _unpickle(path: Path) -> dict:
    try:
        with open_regular(path) as fh:
            batch = _BatchUnpickler(fh, encoding="bytes").load()
    except UnsafePathError as exc:
        raise ValidationError(f"CIFAR-10 batch {str(path)!r} is a link or not a plain file: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError) as exc:
        raise ValidationError(f"CIFAR-10 batch {str(path)!r} cannot be read: {exc}") from exc
    if not isinstance(batch, dict):
        raise ValidationError(f"CIFAR-10 batch {str(path)!r} holds a {type(batch).__name__}, not a dict.")
    for key, value in batch.items():
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            raise ValidationError(f"CIFAR-10 batch {str(path)!r}: {key!r} holds Python objects, not pixels.")
    return batch
