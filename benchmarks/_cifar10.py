"""Load the CIFAR-10 JPEG tarball from ../shared/data into cached uint8 arrays (benchmarks only)."""

from __future__ import annotations

import tarfile
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_TARBALL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"


def load_cifar10(tarball: Path = DEFAULT_TARBALL, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Return train/test images (N, 32, 32, 3) uint8, labels, ids and class names.

    Decoding 60,000 JPEGs takes about a minute; the result is cached as an .npz next to
    ``cache`` (default: /tmp/cifar10-jpg.npz).
    """
    cache = cache or Path("/tmp/cifar10-jpg.npz")
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return {k: data[k] for k in data.files}
    if not Path(tarball).is_file():
        raise FileNotFoundError(f"CIFAR-10 tarball not found at {tarball}; see ../shared/README.md")
    buckets: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in buckets:
                continue
            image = Image.open(BytesIO(tar.extractfile(member).read())).convert("RGB")
            buckets[parts[0]].append((parts[1], f"{parts[0]}/{parts[1]}/{parts[2]}", np.asarray(image)))
    classes = sorted({c for c, _, _ in buckets["train"]})
    out: dict[str, np.ndarray] = {"classes": np.array(classes)}
    for split, items in buckets.items():
        items.sort(key=lambda item: item[1])
        out[f"{split}_images"] = np.stack([img for _, _, img in items])
        out[f"{split}_labels"] = np.array([classes.index(c) for c, _, _ in items], dtype=np.int64)
        out[f"{split}_ids"] = np.array([i for _, i, _ in items])
    np.savez(cache, **out)
    return out
