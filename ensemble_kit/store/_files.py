"""Low-level file I/O of the store: checksummed ``.npy`` arrays and atomic JSON documents.

Everything here is plain numpy ``.npy`` (never pickled) and UTF-8 JSON, so a store can be read
with numpy/pandas alone. Files are published with ``os.replace`` so a reader never sees a
half-written file under its final name.

Every read goes through :func:`open_regular`: the file is opened once, without following a
symbolic link and without blocking (a FIFO or device planted in a store is refused, never
waited on), and everything (header, size, content, checksum) is read from that one descriptor,
so a concurrent writer that replaces the file cannot make the reader see two versions.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np
import xxhash

from ensemble_kit.errors import StoreCorruptedError, UnsafePathError

_HASH_CHUNK = 64 << 20
_TMP_SUFFIX = ".tmp"
# Checksums are stored as "<algorithm>:<hex digest>". XXH3-128 is written because it hashes at
# memory speed (~20 GB/s; SHA-256 manages ~1.6 GB/s, slower than writing the file). It guards
# against corruption, not tampering. SHA-256 digests are still accepted when reading.
CHECKSUM_ALGORITHM = "xxh3_128"
_HASHERS = {"xxh3_128": xxhash.xxh3_128, "sha256": hashlib.sha256}
# A manifest is a few kB; anything this large is not one (and is not read into memory).
MAX_JSON_BYTES = 64 << 20
# .npy headers are tiny; numpy refuses headers above 10,000 bytes by default as well.
_MAX_NPY_HEADER = 10_000
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: Path) -> IO[bytes]:
    """Open ``path`` for reading only if it is a regular file reached without a final symlink.

    Raises
    ------
    FileNotFoundError
        No such file (callers that race with writers retry on it).
    UnsafePathError
        The path is a symbolic link, a FIFO, a device, a socket or a folder.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.EMLINK and os.path.islink(path)):
            raise UnsafePathError(f"{str(path)!r} is a symbolic link; ensemble_kit never follows links inside "
                                  "a store. Replace it with the file itself.", path=path) from exc
        if exc.errno in (errno.ENXIO, errno.EISDIR):
            raise UnsafePathError(f"{str(path)!r} is not a regular file.", path=path) from exc
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafePathError(f"{str(path)!r} is not a regular file (mode {stat.filemode(info.st_mode)}); a store "
                              "holds only plain files and folders.", path=path)
    return os.fdopen(fd, "rb")


def check_not_link(path: Path, *, what: str) -> None:
    """Refuse ``path`` if it exists as a symbolic link (files are replaced, never followed)."""
    if os.path.islink(path):
        raise UnsafePathError(f"{what} {str(path)!r} is a symbolic link; ensemble_kit never writes through or "
                              "deletes via links inside a store. Remove the link.", path=path)


def _npy_header(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, np.lib.format.header_data_from_array_1_0(array))
    return buf.getvalue()


def write_npy(path: Path, array: np.ndarray) -> str:
    """Write ``array`` as ``.npy`` at ``path`` atomically and return its tagged checksum.

    The digest covers the whole file (header included), so ``xxhsum -H2 FILE`` matches the
    manifest. Hashing runs in a second thread while the bytes are written (both release the
    GIL), so the checksum costs almost no wall time. ``os.replace`` replaces a link planted at
    ``path`` by the new file; it never writes through it.
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
            with open(tmp, "xb") as fh:
                fh.write(header)
                fh.write(data)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        hashing.result()
    os.replace(tmp, path)
    return f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}"


def check_checksum_tag(checksum: object, *, path: object = None, field: str | None = None) -> str:
    """``checksum`` must be ``"<known algorithm>:<hex>"``; returns it."""
    algorithm, sep, digest = checksum.partition(":") if isinstance(checksum, str) else ("", "", "")
    if not sep or algorithm not in _HASHERS:
        raise StoreCorruptedError(
            f"Unknown checksum algorithm {algorithm or checksum!r} for {str(path)!r}; known: {sorted(_HASHERS)}.",
            path=path, field=field)
    if not digest or any(c not in "0123456789abcdef" for c in digest):
        raise StoreCorruptedError(f"Checksum {checksum!r} for {str(path)!r} is not a hex digest.", path=path, field=field)
    return checksum


def _hash_open_file(fh: IO[bytes], checksum: str, path: Path) -> bool:
    algorithm, _, expected = check_checksum_tag(checksum, path=path).partition(":")
    digest = _HASHERS[algorithm]()
    fh.seek(0)
    size = os.fstat(fh.fileno()).st_size
    chunk = memoryview(bytearray(min(_HASH_CHUNK, max(size, 1))))
    while got := fh.readinto(chunk):
        digest.update(chunk[:got])
    return digest.hexdigest() == expected


def file_matches(path: Path, checksum: str) -> bool:
    """Whether the file's content matches a tagged checksum such as ``"xxh3_128:ab12..."``."""
    with open_regular(path) as fh:
        return _hash_open_file(fh, checksum, path)


def _read_header(fh: IO[bytes], path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and data offset of an open ``.npy`` file, checked against its size."""
    try:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fh, max_header_size=_MAX_NPY_HEADER)
    except (ValueError, SyntaxError, OSError, EOFError) as exc:
        raise StoreCorruptedError(f"Array file {str(path)!r} has no valid .npy header ({exc}).", path=path) from exc
    if dtype.hasobject:
        raise StoreCorruptedError(f"Array file {str(path)!r} holds Python objects (dtype {dtype}); a store holds only "
                                  "numeric and string arrays and never unpickles.", path=path)
    offset = fh.tell()
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise StoreCorruptedError(f"Array file {str(path)!r} has an invalid shape {shape} in its header.", path=path)
    # Python integers: a crafted shape such as (2**32, 2**32) must not wrap around to a small size
    expected = offset + math.prod(shape) * dtype.itemsize
    actual = os.fstat(fh.fileno()).st_size
    if actual != expected:
        raise StoreCorruptedError(
            f"Array file {str(path)!r} is {actual} bytes but its header describes {expected} "
            "bytes (truncated or appended to). Run LogitStore.verify() and re-write the entry.", path=path)
    return tuple(int(s) for s in shape), bool(fortran), dtype, offset


def load_array(path: Path, *, checksum: str | None = None, mmap: bool = False) -> np.ndarray:
    """Read an ``.npy`` file through one descriptor, never unpickling.

    The header must describe exactly the file's size. With ``checksum``, the bytes read are
    hashed (no second read of the file) and must match, else :class:`StoreCorruptedError`.
    ``mmap=True`` returns a read-only memory map of that descriptor's file.
    """
    with open_regular(path) as fh:
        shape, fortran, dtype, offset = _read_header(fh, path)
        count = math.prod(shape)
        order = "F" if fortran else "C"
        if mmap:
            if checksum is not None and not _hash_open_file(fh, checksum, path):
                raise StoreCorruptedError(f"Array file {str(path)!r} does not match its checksum (modified or "
                                          "corrupted).", path=path)
            if count:
                return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
            return np.empty(shape, dtype=dtype)
        # One read, straight into the array's memory (np.empty: no zero-filling pass); the
        # checksum is computed over the header and those same bytes, not a second read.
        fh.seek(0)
        header = fh.read(offset)
        array = np.empty(count, dtype=dtype)
        data = memoryview(array).cast("B") if count else memoryview(b"")
        filled = 0
        while filled < len(data):
            got = fh.readinto(data[filled:])
            if not got:
                raise StoreCorruptedError(f"Array file {str(path)!r} ended early while being read.", path=path)
            filled += got
    if checksum is not None:
        algorithm, _, expected = check_checksum_tag(checksum, path=path).partition(":")
        digest = _HASHERS[algorithm](header)
        for start in range(0, len(data), _HASH_CHUNK):
            digest.update(data[start : start + _HASH_CHUNK])
        if digest.hexdigest() != expected:
            raise StoreCorruptedError(f"Array file {str(path)!r} does not match its checksum (modified or corrupted).",
                                      path=path)
    return array.reshape(shape, order=order)


def read_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """Read an ``.npy`` file without ever unpickling; truncated files raise a clear error."""
    return load_array(path, mmap=mmap)


def check_npy_size(path: Path) -> None:
    """Cheap integrity check: the file is exactly as long as its header says."""
    with open_regular(path) as fh:
        _read_header(fh, path)


def npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` header (size-checked), without reading the data."""
    with open_regular(path) as fh:
        shape, _, dtype, _ = _read_header(fh, path)
    return shape, dtype


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` at ``path`` atomically: a new temp file, then ``os.replace``.

    A link planted at ``path`` is replaced by the file, never written through.
    """
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` as UTF-8 at ``path`` atomically (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as JSON at ``path`` atomically (write a temp file, then rename)."""
    write_text(path, json.dumps(document, indent=2, sort_keys=True, allow_nan=False, default=_json_default) + "\n")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; any fault of the file is a :class:`StoreCorruptedError` naming it.

    Not a regular file, a link, over 64 MiB, not UTF-8, not JSON, nested too deeply, holding
    ``NaN``/``Infinity``, or not an object: each is refused without hanging or a raw error.
    """
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_JSON_BYTES:
            raise StoreCorruptedError(f"{str(path)!r} is {size} bytes: too large for a manifest "
                                      f"(limit {MAX_JSON_BYTES}).", path=path)
        raw = fh.read()
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise StoreCorruptedError(f"{str(path)!r} is not UTF-8 text ({exc}).", path=path) from exc
    except RecursionError as exc:
        raise StoreCorruptedError(f"{str(path)!r} is nested too deeply to be a manifest.", path=path) from exc
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise StoreCorruptedError(f"{str(path)!r} is not valid JSON ({exc}).", path=path) from exc
    if not isinstance(document, dict):
        raise StoreCorruptedError(f"{str(path)!r} must hold a JSON object; got {type(document).__name__}.", path=path)
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


def to_json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (numpy scalars and arrays, paths converted); raises TypeError otherwise."""
    return json.loads(json.dumps(value, allow_nan=False, default=_json_default))
