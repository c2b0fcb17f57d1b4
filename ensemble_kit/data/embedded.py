"""Embedded demo data: scikit-learn's handwritten digits rendered as small RGB images.

It ships with scikit-learn, so demos and tests run with no network and no download.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_digits


@dataclass(frozen=True)
class EmbeddedImages:
    """Images ``(N, H, W, 3)`` uint8, integer labels, string ids and class names."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    ids: NDArray[np.str_]
    classes: list[str]


def load_digits_images(*, image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> tuple[EmbeddedImages, EmbeddedImages]:
    """The 1,797 scikit-learn digits (8x8, 0..16) as ``image_size`` RGB images, split train/test.

    Parameters
    ----------
    image_size : int
        Side of the rendered square images (nearest-neighbour upscaling of the 8x8 digits).
    test_fraction : float
        Fraction held out as a labelled test set (stratified).
    seed : int
        Seed of the split.

    Examples
    --------
    >>> train, test = load_digits_images(image_size=16)
    >>> train.images.shape[1:], train.classes[:3], len(train.ids) + len(test.ids)
    ((16, 16, 3), ['0', '1', '2'], 1797)
    """
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    scale = max(1, image_size // 8)
    gray = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    gray = np.kron(gray, np.ones((1, scale, scale), dtype=np.uint8))
    if gray.shape[1] != image_size:
        pad = image_size - gray.shape[1]
        gray = np.pad(gray, ((0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)))
    images = np.repeat(gray[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    ids = np.array([f"digit{i:04d}" for i in range(len(labels))])
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
    )
    classes = [str(c) for c in range(10)]
    return (
        EmbeddedImages(images[train_idx], labels[train_idx], ids[train_idx], classes),
        EmbeddedImages(images[test_idx], labels[test_idx], ids[test_idx], classes),
    )
