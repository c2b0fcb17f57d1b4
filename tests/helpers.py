"""Helpers shared by tests (importable as ``helpers``: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

FAST_GBM = {"num_boost_round": 60}
FAST_CATBOOST = {"iterations": 60}


def snapshot(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its SHA-256 (lock files excluded: they are not data)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.suffix != ".lock"
    }


def make_logits(n=240, n_classes=3, n_models=3, seed=0, strength=(1.0, 1.6, 2.2)):
    """OOF-like logits: model i sees the true class with strength[i] plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    logits = {f"m{i}": np.eye(n_classes)[y] * strength[i % len(strength)] + rng.normal(size=(n, n_classes)) * 1.5
              for i in range(n_models)}
    return logits, y


def tiny_image_data(n_train=48, n_test=12, n_classes=3, size=16, seed=0):
    """Coloured-square images whose class decides the colour: learnable in one epoch."""
    from ensemble_kit.data import ArrayImageSource

    rng = np.random.default_rng(seed)
    palette = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220], [220, 220, 30]][:n_classes], dtype=np.float64)

    def images(labels):
        base = palette[labels][:, None, None, :] + rng.normal(0, 25, size=(len(labels), size, size, 3))
        return np.clip(base, 0, 255).astype(np.uint8)

    y = np.arange(n_train) % n_classes
    y_test = np.arange(n_test) % n_classes
    train = ArrayImageSource(images(y), y, ids=[f"tr{i}" for i in range(n_train)], classes=list(range(n_classes)))
    test = ArrayImageSource(images(y_test), ids=[f"te{i}" for i in range(n_test)], classes=list(range(n_classes)))
    return train, test, y_test


def class_image(label: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """One noisy image whose colour and stripe phase encode ``label`` (up to 8 classes learnable)."""
    hue = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 181 + 160) % 256], dtype=np.float64)
    image = hue[None, None, :] + rng.normal(0, 20, size=(size, size, 3))
    image[(np.arange(size) + label) % 4 == 0] *= 0.5
    return np.clip(image, 0, 255).astype(np.uint8)


def write_images(folder: Path, names_labels: list[tuple[str, int]], *, seed: int = 0, size: int = 16) -> None:
    """Write one image file per ``(file name, label)`` under ``folder`` (format from the suffix)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, label in names_labels:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(class_image(label, rng, size)).save(target)


def reseal(folder: Path, manifest: str = "stack.json", document: dict | None = None) -> dict:
    """Rewrite an artifact's manifest (``document``, default: as it is) with a fresh manifest checksum:
    what an attacker who edits the JSON does, so tests reach the checks behind the checksum."""
    import json

    from ensemble_kit.store._artifacts import MANIFEST_CHECKSUM, manifest_checksum

    path = Path(folder) / manifest
    document = json.loads(path.read_text()) if document is None else document
    document[MANIFEST_CHECKSUM] = manifest_checksum(document)
    path.write_text(json.dumps(document))
    return document
