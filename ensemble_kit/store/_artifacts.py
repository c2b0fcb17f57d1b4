"""Folders of checksummed files that leave the store: saved stacks, exported fold models, bundles.

An artifact is a folder with one JSON manifest (``format``, ``version``, the content's own
description, a record ``{"file", "checksum"}`` for every other file, and ``manifest_checksum``,
the digest of the manifest itself) and plain files: ``.npy`` arrays and opaque blobs in a
library's native format (LightGBM model text, CatBoost JSON, safetensors). It is written to a
staging folder and published with one rename (:func:`publish`, the library's one way to put a
folder in place), and read back the way the store reads itself: no link followed, no pickle,
every file hashed against its record before use, every fault an
:class:`~ensemble_kit.errors.ArtifactError` naming the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensemble_kit.errors import ArtifactError, DestinationError, StoreCorruptedError
from ensemble_kit.store._files import (
    CHECKSUM_ALGORITHM,
    _HASHERS,
    check_checksum_tag,
    file_matches,
    load_array,
    open_regular,
    read_json,
    write_bytes,
    write_json,
    write_npy,
)
from ensemble_kit.store._manifest import STORE_MANIFEST
from ensemble_kit.store._paths import safe_dir
from ensemble_kit.store._workspace import remove_tree

__all__ = ["MANIFEST_CHECKSUM", "ArtifactKind", "ArtifactReader", "ArtifactWriter", "check_destination",
           "check_output_file", "is_artifact", "manifest_checksum", "publish", "verify_artifact"]

_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+=,-]{0,200}")
#: The manifest field holding the digest of the manifest itself (every other field, canonical JSON).
MANIFEST_CHECKSUM = "manifest_checksum"


def manifest_checksum(document: dict[str, Any]) -> str:
    """The tagged digest of ``document`` without its :data:`MANIFEST_CHECKSUM` field.

    Computed over canonical JSON (sorted keys, no spaces), which a JSON round trip reproduces
    exactly, so the digest survives being written and read back, and any edited value changes it.
    """
    body = {k: v for k, v in document.items() if k != MANIFEST_CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return f"{CHECKSUM_ALGORITHM}:{_HASHERS[CHECKSUM_ALGORITHM](text.encode('utf-8')).hexdigest()}"


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
        """Write the manifest ``name``: ``document``, the file records and the manifest's own checksum."""
        full = {**document, "files": self.records}
        write_json(self.folder / name, {**full, MANIFEST_CHECKSUM: manifest_checksum(full)})

    def _new_file(self, key: str, suffix: str) -> str:
        if key in self.records:
            raise ArtifactError(f"Artifact file key {key!r} written twice.")
        file = f"{key}{suffix}"
        if _FILE_RE.fullmatch(file) is None:
            raise ArtifactError(f"Artifact file key {key!r} is not a plain file name.")
        return file


class ArtifactReader:
    """Reads an artifact's manifest and files, checking format, version and every checksum."""

    def __init__(self, folder: Path, manifest: str, *, format_name: str, versions: tuple[int, ...],
                 sealed_versions: tuple[int, ...] = ()) -> None:
        """``sealed_versions``: versions whose manifest must carry :data:`MANIFEST_CHECKSUM`
        (older ones were written without it); wherever it is present it must match."""
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
        if type(version) is not int or version not in versions:  # True == 1 and 2.0 == 2 in Python
            raise ArtifactError(f"{str(where)!r} has format version {version!r}; this ensemble_kit reads versions "
                                f"{list(versions)}. Upgrade ensemble_kit, or re-save it with this one.")
        sealed = self.document.get(MANIFEST_CHECKSUM)
        if sealed is None and version in sealed_versions:
            raise ArtifactError(f"{str(where)!r} has no {MANIFEST_CHECKSUM!r}: a version-{version} manifest is always "
                                "written with one, so this one was edited or damaged.")
        if sealed is not None and sealed != manifest_checksum(self.document):
            raise ArtifactError(f"{str(where)!r} does not match its {MANIFEST_CHECKSUM!r}: the manifest was modified "
                                "or corrupted after it was written.")
        self.version: int = version
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
        size = record.get("bytes", 0)
        if type(size) is not int or size < 0:
            raise ArtifactError(f"{str(self.where)!r}: 'files.{key}.bytes' must be a byte count; got {size!r}.")
        return self.folder / record["file"], record

    def array(self, reference: Any) -> np.ndarray:
        """The array a ``{"__array__": key}`` reference names, checksum-verified and as its record describes."""
        key = reference.get("__array__") if isinstance(reference, dict) else None
        path, record = self._record(key)
        try:
            array = load_array(path, checksum=record["checksum"])
        except FileNotFoundError as exc:
            raise ArtifactError(f"Artifact file {str(path)!r} is missing.") from exc
        except StoreCorruptedError as exc:
            raise ArtifactError(f"Artifact file {str(path)!r}: {exc}") from exc
        if ("shape" in record and record["shape"] != list(array.shape)) or ("dtype" in record and record["dtype"] != array.dtype.str):
            raise ArtifactError(f"Artifact file {str(path)!r} holds {array.dtype.str} {list(array.shape)}; its record "
                                f"says {record.get('dtype')} {record.get('shape')}.")
        return array

    def blob(self, reference: Any) -> bytes:
        """The bytes a ``{"__blob__": key}`` reference names, checksum-verified."""
        key = reference.get("__blob__") if isinstance(reference, dict) else None
        path, record = self._record(key)
        try:
            with open_regular(path) as fh:
                size = os.fstat(fh.fileno()).st_size
                if "bytes" in record and size != record["bytes"]:
                    raise ArtifactError(f"Artifact file {str(path)!r} is {size} bytes; its record says "
                                        f"{record['bytes']!r} (truncated, appended to or replaced).")
                data = fh.read()
        except FileNotFoundError as exc:
            raise ArtifactError(f"Artifact file {str(path)!r} is missing.") from exc
        except StoreCorruptedError as exc:
            raise ArtifactError(f"Artifact file {str(path)!r}: {exc}") from exc
        algorithm, _, expected = record["checksum"].partition(":")
        if _HASHERS[algorithm](data).hexdigest() != expected:
            raise ArtifactError(f"Artifact file {str(path)!r} does not match its checksum (modified or corrupted).")
        return data

    def verify_files(self) -> list[str]:
        """What is wrong with the artifact's files: each missing, unsafe or mismatching one, named."""
        problems = []
        for key in sorted(self.files):
            try:
                path, record = self._record(key)
                if not file_matches(path, record["checksum"]):
                    problems.append(f"{str(path)!r} does not match its checksum (modified or corrupted)")
            except FileNotFoundError:
                problems.append(f"{str(self.folder / str(self.files[key].get('file')))!r} is missing")
            except (ArtifactError, StoreCorruptedError) as exc:
                problems.append(str(exc))
        return problems

    def path_of(self, key: str) -> Path:
        """The verified path of a blob (for libraries that read files, not bytes)."""
        self.blob({"__blob__": key})
        return self._record(key)[0]


def is_artifact(folder: Path, manifest: str, format_name: str) -> bool:
    """Whether ``folder`` holds a ``manifest`` (a plain file, reached through real folders; a
    relative path such as ``stacker/stack.json``) whose ``format`` is ``format_name``."""
    *parents, name = manifest.split("/")
    try:
        return read_json(safe_dir(Path(folder), *parents) / name).get("format") == format_name
    except (OSError, StoreCorruptedError):
        return False


def verify_artifact(folder: Path, manifest: str) -> list[str]:
    """Every problem of the artifact at ``folder``, whatever its format: its manifest (readable, and
    matching its own checksum where it carries one), then each recorded file's checksum. ``[]`` when sound."""
    try:
        document = read_json(safe_dir(Path(folder).parent, Path(folder).name) / manifest)
    except FileNotFoundError:
        return [f"{str(Path(folder) / manifest)!r} is missing"]
    except (OSError, StoreCorruptedError) as exc:
        return [str(exc)]
    sealed = document.get(MANIFEST_CHECKSUM)
    if sealed is not None and sealed != manifest_checksum(document):
        return [f"{str(Path(folder) / manifest)!r} does not match its {MANIFEST_CHECKSUM!r} (modified or corrupted)"]
    try:
        reader = ArtifactReader(folder, manifest, format_name=str(document.get("format")),
                                versions=(document.get("version"),))
    except (ArtifactError, StoreCorruptedError) as exc:
        return [str(exc)]
    return reader.verify_files()


def _is_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


@dataclass(frozen=True)
class ArtifactKind:
    """What a save of one kind may replace: a folder whose ``manifest`` names ``format_name`` and
    that holds nothing but that manifest, the files it records and ``entries`` (its sub-folders),
    or a folder ``legacy`` recognises (the layout an older version wrote)."""

    manifest: str
    format_name: str
    entries: frozenset[str] = frozenset()
    legacy: Callable[[Path], bool] | None = None

    def unrecorded(self, folder: Path) -> list[str] | None:
        """What ``folder`` holds besides this kind's files; ``None`` when it is not of this kind."""
        if self.legacy is not None and self.legacy(folder):
            return []
        if not is_artifact(folder, self.manifest, self.format_name):
            return None
        records = read_json(folder / self.manifest).get("files")
        recorded = {r.get("file") for r in records.values() if isinstance(r, dict)} if isinstance(records, dict) else set()
        return sorted(set(os.listdir(folder)) - {self.manifest} - recorded - self.entries)


def _store_holding(path: Path) -> Path | None:
    """The logit store ``path`` lies in (or is), if any."""
    for folder in (path, *path.parents):
        if os.path.lexists(folder / STORE_MANIFEST):
            return folder
    return None


def _absolute(path: Path | str) -> Path:
    try:
        final = Path(os.path.abspath(path))
        try:
            os.lstat(final)  # a NUL byte or an over-long name fails here, before anything is touched
        except (FileNotFoundError, NotADirectoryError):
            pass
    except (ValueError, OSError) as exc:
        raise DestinationError(f"{str(path)!r} cannot be written to ({exc}).") from exc
    for parent in final.parents:
        if os.path.lexists(parent):
            if not os.path.isdir(parent):
                raise DestinationError(f"{str(final)!r} cannot be written: {str(parent)!r} is not a folder.")
            break
    return final


def check_destination(final: Path, kind: ArtifactKind | None, *, outside_stores: bool = False) -> Path:
    """``final`` as an absolute path, if a folder may be published there; else :class:`DestinationError`.

    A save may only replace an empty folder or an artifact of its own ``kind`` that holds nothing
    else (``kind=None``: nothing is replaced). It refuses, before anything is written or deleted:
    a link, a file, a path under a file, any other non-empty folder, a logit store, the current
    folder or one of its parents, and (``outside_stores``, for what does not belong in a store,
    such as a bundle) any place inside a logit store.
    """
    final = _absolute(final)
    cwd = Path.cwd().resolve()
    if os.path.islink(final):
        raise DestinationError(f"{str(final)!r} is a symbolic link; refusing to replace it. Write to a real folder.")
    resolved = final.resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise DestinationError(f"{str(final)!r} is the current folder or one of its parents; refusing to replace "
                               "it. Name a new folder to write to, e.g. ./bundle.")
    store = _store_holding(resolved)
    if store is not None and (outside_stores or store == resolved):
        raise DestinationError(f"{str(final)!r} is {'a logit store' if store == resolved else 'inside the logit store'} "
                               f"{str(store)!r}; refusing to write there (nothing was written or deleted). Choose a "
                               "folder outside the store.")
    try:
        info = os.lstat(final)
    except FileNotFoundError:
        return final
    if not stat.S_ISDIR(info.st_mode):
        raise DestinationError(f"{str(final)!r} exists and is not a folder; nothing was written. Remove it or "
                               "choose another path.")
    if _is_empty(final):
        return final
    if kind is None:
        raise DestinationError(f"{str(final)!r} is not empty; refusing to write over it (nothing was deleted). "
                               "Choose a new or empty folder.")
    extra = kind.unrecorded(final)
    if extra is None:
        raise DestinationError(f"{str(final)!r} is a non-empty folder but not a {kind.format_name} artifact written "
                               "by ensemble_kit; refusing to replace it (nothing was deleted). Choose a new folder, "
                               "or delete this one yourself.")
    if extra:
        raise DestinationError(f"{str(final)!r} is a {kind.format_name} artifact but also holds {len(extra)} "
                               f"entr{'y' if len(extra) == 1 else 'ies'} it does not record ({', '.join(extra[:5])}); "
                               "refusing to replace it (nothing was deleted). Move them out first.")
    return final


def check_output_file(path: Path | str, *, what: str) -> Path:
    """``path`` as an absolute path, if a file may be written there: not a folder, not under a
    file, not inside a logit store (a store's files are the store's own). Else :class:`DestinationError`."""
    final = _absolute(path)
    if os.path.isdir(final):
        raise DestinationError(f"{what} {str(final)!r} is a folder; name a file, e.g. {str(final / 'out.csv')!r}.")
    store = _store_holding(final.resolve())
    if store is not None:
        raise DestinationError(f"{what} {str(final)!r} lies inside the logit store {str(store)!r}; a store holds only "
                               "its own files. Write it elsewhere.")
    return final


@contextmanager
def publish(final: Path, kind: ArtifactKind | None, *, outside_stores: bool = False) -> Iterator[Path]:
    """A staging folder next to ``final``; on success it is renamed to ``final``.

    The one way the library puts a folder in place. ``final`` must be new, an empty folder, or
    an earlier artifact of the same ``kind`` (holding nothing else), which is then replaced:
    renamed aside, the new folder renamed in, the old one deleted without following links.
    Anything else is refused by :func:`check_destination` before the staging folder is made. On
    any error the staging folder is removed and ``final`` is left as it was.
    """
    final = check_destination(final, kind, outside_stores=outside_stores)
    staging = final.with_name(f".{final.name}.writing-{uuid.uuid4().hex[:8]}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as exc:
        raise DestinationError(f"{str(final)!r} cannot be written ({exc.strerror or exc}).") from exc
    try:
        yield staging
        # checked again: the folder may have changed while the artifact was being written
        check_destination(final, kind, outside_stores=outside_stores)
        retired = None
        if os.path.lexists(final):
            if _is_empty(final):
                final.rmdir()
            else:
                retired = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                os.rename(final, retired)
        os.rename(staging, final)
        if retired is not None:
            remove_tree(retired, trash_root=final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
