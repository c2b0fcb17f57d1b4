"""Folders of checksummed files that leave the store: saved stacks, exported fold models, bundles.

An artifact is a folder with one JSON manifest (``format``, ``version``, the content's own
description, and a record ``{"file", "checksum"}`` for every other file) and plain files:
``.npy`` arrays and opaque blobs in a library's native format (LightGBM model text, CatBoost
``.cbm``, safetensors). It is written to a staging folder and published with one rename, and
read back the way the store reads itself: no link followed, no pickle, every file hashed
against its record before use, every fault an :class:`~ensemble_kit.errors.ArtifactError`
naming the file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ensemble_kit.errors import ArtifactError, StoreCorruptedError
from ensemble_kit.store._files import (
    CHECKSUM_ALGORITHM,
    _HASHERS,
    check_checksum_tag,
    load_array,
    open_regular,
    read_json,
    write_bytes,
    write_json,
    write_npy,
)
from ensemble_kit.store._paths import safe_dir

__all__ = ["ArtifactReader", "ArtifactWriter", "publish"]

_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+=,-]{0,200}")


class ArtifactWriter:
    """Collects the files of an artifact being written into ``folder`` (a staging folder)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.records: dict[str, dict[str, Any]] = {}

    def array(self, key: str, array: np.ndarray) -> dict[str, str]:
        """Save ``array`` as ``<key>.npy``; returns the reference to put in the manifest."""
        array = np.ascontiguousarray(array)
        if array.dtype.hasobject:
            raise ArtifactError(f"Array {key!r} holds Python objects; artifacts hold numeric arrays only.")
        file = self._new_file(key, ".npy")
        self.records[key] = {"file": file, "checksum": write_npy(self.folder / file, array),
                             "shape": list(array.shape), "dtype": array.dtype.str}
        return {"__array__": key}

    def blob(self, key: str, data: bytes, *, suffix: str) -> dict[str, str]:
        """Save ``data`` (a library's native model bytes) as ``<key><suffix>``."""
        file = self._new_file(key, suffix)
        write_bytes(self.folder / file, data)
        digest = _HASHERS[CHECKSUM_ALGORITHM](data).hexdigest()
        self.records[key] = {"file": file, "checksum": f"{CHECKSUM_ALGORITHM}:{digest}", "bytes": len(data)}
        return {"__blob__": key}

    def manifest(self, name: str, document: dict[str, Any]) -> None:
        write_json(self.folder / name, {**document, "files": self.records})

    def _new_file(self, key: str, suffix: str) -> str:
        if key in self.records:
            raise ArtifactError(f"Artifact file key {key!r} written twice.")
        file = f"{key}{suffix}"
        if _FILE_RE.fullmatch(file) is None:
            raise ArtifactError(f"Artifact file key {key!r} is not a plain file name.")
        return file


class ArtifactReader:
    """Reads an artifact's manifest and files, checking format, version and every checksum."""

    def __init__(self, folder: Path, manifest: str, *, format_name: str, versions: tuple[int, ...]) -> None:
        self.folder = Path(folder)
        where = self.folder / manifest
        try:
            safe_dir(self.folder.parent, self.folder.name)
            self.document = read_json(where)
        except FileNotFoundError as exc:
            raise ArtifactError(f"{str(self.folder)!r} is not a {format_name} artifact: {manifest} is missing.") from exc
        except StoreCorruptedError as exc:
            raise ArtifactError(f"{str(where)!r} cannot be read: {exc}") from exc
        if self.document.get("format") != format_name:
            raise ArtifactError(f"{str(where)!r} is not a {format_name} manifest (format "
                                f"{self.document.get('format')!r}).")
        version = self.document.get("version")
        if version not in versions:
            raise ArtifactError(f"{str(where)!r} has format version {version!r}; this ensemble_kit reads versions "
                                f"{list(versions)}. Upgrade ensemble_kit, or re-save it with this one.")
        files = self.document.get("files")
        if not isinstance(files, dict):
            raise ArtifactError(f"{str(where)!r}: field 'files' must map keys to file records.")
        self.files: dict[str, dict[str, Any]] = files
        self.where = where

    def _record(self, key: Any) -> tuple[Path, dict[str, Any]]:
        record = self.files.get(key) if isinstance(key, str) else None
        if not isinstance(record, dict) or not isinstance(record.get("file"), str) \
                or _FILE_RE.fullmatch(record["file"]) is None:
            raise ArtifactError(f"{str(self.where)!r}: no valid file record for {key!r}.")
        try:
            check_checksum_tag(record.get("checksum"), path=self.where, field=f"files.{key}.checksum")
        except StoreCorruptedError as exc:
            raise ArtifactError(str(exc)) from exc
        return self.folder / record["file"], record

    def array(self, reference: Any) -> np.ndarray:
        """The array a ``{"__array__": key}`` reference names, checksum-verified."""
        key = reference.get("__array__") if isinstance(reference, dict) else None
        path, record = self._record(key)
        try:
            return load_array(path, checksum=record["checksum"])
        except FileNotFoundError as exc:
            raise ArtifactError(f"Artifact file {str(path)!r} is missing.") from exc
        except StoreCorruptedError as exc:
            raise ArtifactError(f"Artifact file {str(path)!r}: {exc}") from exc

    def blob(self, reference: Any) -> bytes:
        """The bytes a ``{"__blob__": key}`` reference names, checksum-verified."""
        key = reference.get("__blob__") if isinstance(reference, dict) else None
        path, record = self._record(key)
        try:
            with open_regular(path) as fh:
                data = fh.read()
        except FileNotFoundError as exc:
            raise ArtifactError(f"Artifact file {str(path)!r} is missing.") from exc
        except StoreCorruptedError as exc:
            raise ArtifactError(f"Artifact file {str(path)!r}: {exc}") from exc
        algorithm, _, expected = record["checksum"].partition(":")
        if _HASHERS[algorithm](data).hexdigest() != expected:
            raise ArtifactError(f"Artifact file {str(path)!r} does not match its checksum (modified or corrupted).")
        return data

    def path_of(self, key: str) -> Path:
        """The verified path of a blob (for libraries that read files, not bytes)."""
        self.blob({"__blob__": key})
        return self._record(key)[0]


@contextmanager
def publish(final: Path) -> Iterator[Path]:
    """A staging folder next to ``final``; on success it replaces ``final`` with one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if os.path.islink(final):
        raise ArtifactError(f"{str(final)!r} is a symbolic link; refusing to replace it.")
    staging = final.with_name(f".{final.name}.writing-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
        retired = None
        if os.path.lexists(final):
            retired = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(final, retired)
        os.rename(staging, final)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
