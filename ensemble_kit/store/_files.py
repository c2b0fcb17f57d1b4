"""Low-level file I/O of the store: checksummed ``.npy`` arrays and atomic JSON documents.

Everything here is plain numpy ``.npy`` (never pickled) and UTF-8 JSON, so a store can be read
with numpy/pandas alone. Files are published with ``os.replace`` so a reader never sees a
half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from ensemble_kit.errors import StoreCorruptedError

_HASH_CHUNK = 64 << 20
_TMP_SUFFIX = ".tmp"
# Checksums are stored as "<algorithm>:<hex digest>". XXH3-128 is written because it hashes at
# memory speed (~20 GB/s; SHA-256 manages ~1.6 GB/s, slower than writing the file). It guards
# against corruption, not tampering. SHA-256 digests are still accepted when reading.
CHECKSUM_ALGORITHM = "xxh3_128"
_HASHERS = {"xxh3_128": xxhash.xxh3_128, "sha256": hashlib.sha256}


def _npy_header(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, np.lib.format.header_data_from_array_1_0(array))
    return buf.getvalue()


def write_npy(path: Path, array: np.ndarray) -> str:
    """Write ``array`` as ``.npy`` at ``path`` atomically and return its tagged checksum.

    The digest covers the whole file (header included), so ``xxhsum -H2 FILE`` matches the
    manifest. Hashing runs in a second thread while the bytes are written (both release the
    GIL), so the checksum costs almost no wall time.
    """
    array = np.ascontiguousarray(array)
    header = _npy_header(array)
    data = memoryview(array.reshape(-1)).cast("B") if array.size else memoryview(b"")
    digest = _HASHERS[CHECKSUM_ALGORITHM](header)

    def _hash() -> None:
        for start in range(0, len(data), _HASH_CHUNK):
            digest.update(data[start : start + _HASH_CHUNK])

    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(_hash)
        try:
            with open(tmp, "wb") as fh:
                fh.write(header)
                fh.write(data)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        hashing.result()
    os.replace(tmp, path)
    return f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}"


def file_matches(path: Path, checksum: str) -> bool:
    """Whether the file's content matches a tagged checksum such as ``"xxh3_128:ab12..."``."""
    algorithm, _, expected = checksum.partition(":")
    if algorithm not in _HASHERS:
        raise StoreCorruptedError(
            f"Unknown checksum algorithm {algorithm!r} for {str(path)!r}; known: {sorted(_HASHERS)}."
        )
    digest = _HASHERS[algorithm]()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == expected


def read_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """Read an ``.npy`` file without ever unpickling; truncated files raise a clear error."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise
    except ValueError as exc:
        raise StoreCorruptedError(
            f"Array file {str(path)!r} cannot be read as a numpy array ({exc}). It is truncated "
            "or corrupted; run LogitStore.verify() and re-write the entry."
        ) from exc


def check_npy_size(path: Path) -> None:
    """Cheap integrity check: the file is exactly as long as its header says."""
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        except ValueError as exc:
            raise StoreCorruptedError(
                f"Array file {str(path)!r} has no valid .npy header ({exc})."
            ) from exc
        expected = fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise StoreCorruptedError(
            f"Array file {str(path)!r} is {actual} bytes but its header describes {expected} "
            "bytes (truncated or appended to). Run LogitStore.verify() and re-write the entry."
        )


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as JSON at ``path`` atomically (write a temp file, then rename)."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StoreCorruptedError(f"{str(path)!r} is not valid JSON ({exc}).") from exc
    if not isinstance(document, dict):
        raise StoreCorruptedError(f"{str(path)!r} must hold a JSON object.")
    return document


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        f"meta values must be JSON-serialisable (str, numbers, bool, None, lists, dicts); "
        f"got {type(value).__name__}: {value!r}"
    )

