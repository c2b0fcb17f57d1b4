"""Typed, versioned manifests of the logit store, validated against a declared schema on read.

A manifest read from disk is untrusted: every key is checked for presence and type, every
number that sizes an allocation or a read is checked against the store's checksummed base
arrays (:class:`Layout`), and every file name it references must be a plain name inside the
entry folder. Any violation is a :class:`~ensemble_kit.errors.StoreCorruptedError` naming the
file and the field. Readers are kept per schema version (``_ENTRY_READERS``), so a format bump
is one new reader plus its test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ensemble_kit.errors import StoreCorruptedError
from ensemble_kit.store._files import check_checksum_tag

SCHEMA_VERSION = 1
FORMAT_NAME = "ensemble_kit.logit_store"
STORE_MANIFEST = "ensemble_kit_store.json"
ENTRY_MANIFEST = "entry.json"
ENTRIES_DIR = "entries"
STORE_DTYPES = ("float32", "float16")
KINDS_WRITTEN = ("logits", "probs")
BASE_ARRAYS = ("train_ids", "y", "folds", "test_ids")
# Array files are written as "<stem>-<random hex>.npy"; a manifest may name nothing else, so it
# can never point a read (or keep a clean-up from deleting) outside its entry folder.
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.npy")


@dataclass(frozen=True)
class Layout:
    """Sizes fixed by the store's checksummed base arrays; every entry manifest must agree."""

    n_train: int
    n_classes: int
    n_test: int | None
    fold_sizes: tuple[int, ...]

    @property
    def n_folds(self) -> int:
        return len(self.fold_sizes)


@dataclass(frozen=True)
class ArrayRecord:
    """One array file of an entry: its name in the entry folder, checksum, shape and dtype."""

    file: str
    checksum: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "checksum": self.checksum, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class FoldRecord:
    """The arrays of one fold of an incomplete entry."""

    oof: ArrayRecord
    test: ArrayRecord | None

    def to_json(self) -> dict[str, Any]:
        return {"oof": self.oof.to_json(), "test": None if self.test is None else self.test.to_json()}


@dataclass(frozen=True)
class EntryManifest:
    """``entries/<name>/entry.json``: what one entry holds (see ``docs/store-format.md``)."""

    name: str
    complete: bool
    kind_written: str
    dtype: str
    n_classes: int
    created: str
    updated: str
    library_version: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    fold_meta: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    folds_present: tuple[int, ...] = ()
    oof: ArrayRecord | None = None
    test: ArrayRecord | None = None
    folds: Mapping[int, FoldRecord] = field(default_factory=dict)

    def records(self) -> list[ArrayRecord]:
        """Every array file the manifest references."""
        found = [r for r in (self.oof, self.test) if r is not None]
        for fold in self.folds.values():
            found += [r for r in (fold.oof, fold.test) if r is not None]
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "complete": self.complete, "kind_written": self.kind_written, "dtype": self.dtype,
            "n_classes": self.n_classes, "created": self.created, "updated": self.updated,
            "library_version": self.library_version, "meta": dict(self.meta),
            "fold_meta": {str(k): dict(v) for k, v in sorted(self.fold_meta.items())},
            "folds_present": list(self.folds_present),
            "oof": None if self.oof is None else self.oof.to_json(),
            "test": None if self.test is None else self.test.to_json(),
            "folds": {str(k): v.to_json() for k, v in sorted(self.folds.items())},
        }


@dataclass(frozen=True)
class StoreManifest:
    """``ensemble_kit_store.json``: identity, classes, sizes and the base arrays' records."""

    schema_version: int
    library_version: str
    created: str
    classes: tuple[Any, ...]
    n_train: int
    n_test: int | None
    n_folds: int
    fold_seed: int | None
    dtype: str
    arrays: Mapping[str, tuple[str, str]]  # key -> (file, checksum)
    fold_labels: tuple[int, ...] | None = None  # the given fold labels, when they were not 0..K-1

    def to_json(self) -> dict[str, Any]:
        extra = {} if self.fold_labels is None else {"fold_labels": list(self.fold_labels)}
        return {**extra,
            "format": FORMAT_NAME, "schema_version": self.schema_version, "library_version": self.library_version,
            "created": self.created, "classes": list(self.classes), "n_classes": len(self.classes),
            "n_train": self.n_train, "n_test": self.n_test, "n_folds": self.n_folds, "fold_seed": self.fold_seed,
            "dtype": self.dtype,
            "arrays": {k: {"file": f, "checksum": c} for k, (f, c) in self.arrays.items()},
        }


# ---------------------------------------------------------------------- schema checking
class _Reader:
    """Typed access to one JSON object, every fault naming the file and the dotted field."""

    def __init__(self, document: Any, path: Path, prefix: str = "") -> None:
        self.path, self.prefix = path, prefix
        if not isinstance(document, dict):
            self.fail(prefix.rstrip(".") or "<root>", "a JSON object", document)
        self.document = document

    def fail(self, key: str, expected: str, got: Any) -> None:
        shown = repr(got)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise StoreCorruptedError(
            f"{str(self.path)!r} is corrupted: field {key!r} must be {expected}; got {shown}. The file was edited or "
            "damaged; restore it from a copy, or remove the entry and write it again.",
            path=self.path, field=key)

    def key(self, name: str) -> str:
        return self.prefix + name

    def raw(self, name: str) -> Any:
        if name not in self.document:
            raise StoreCorruptedError(f"{str(self.path)!r} is corrupted: required field {self.key(name)!r} is missing.",
                                      path=self.path, field=self.key(name))
        return self.document[name]

    def str(self, name: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.raw(name)
        if not isinstance(value, str) or (choices is not None and value not in choices):
            self.fail(self.key(name), f"one of {list(choices)}" if choices else "a string", value)
        return value

    def bool(self, name: str) -> bool:
        value = self.raw(name)
        if not isinstance(value, bool):
            self.fail(self.key(name), "true or false", value)
        return value

    def int(self, name: str, *, low: int = 0, high: int | None = None, optional: bool = False) -> int | None:
        value = self.raw(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in {low}..{high}"
            self.fail(self.key(name), f"an integer {bounds}" + (" or null" if optional else ""), value)
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.raw(name)
        if not isinstance(value, dict):
            self.fail(self.key(name), "a JSON object", value)
        return value

    def child(self, name: str) -> _Reader:
        return _Reader(self.raw(name), self.path, f"{self.key(name)}.")


def _fold_key(reader: _Reader, field_name: str, key: str, n_folds: int) -> int:
    if not key.isdigit() or int(key) >= n_folds:
        reader.fail(field_name, f"keyed by fold indices 0..{n_folds - 1}", key)
    return int(key)


def _array_record(reader: _Reader, name: str, *, shape: tuple[int, ...], dtype: str) -> ArrayRecord:
    record = reader.child(name)
    file = record.str("file")
    if _FILE_RE.fullmatch(file) is None:
        record.fail(record.key("file"), "a plain .npy file name inside the entry folder", file)
    checksum = check_checksum_tag(record.raw("checksum"), path=reader.path, field=record.key("checksum"))
    raw_shape = record.raw("shape")
    if (not isinstance(raw_shape, list) or len(raw_shape) != len(shape)
            or any(isinstance(s, bool) or not isinstance(s, int) for s in raw_shape)):
        record.fail(record.key("shape"), f"a list of {len(shape)} integers", raw_shape)
    if tuple(raw_shape) != shape:
        record.fail(record.key("shape"), f"{list(shape)} (what the store's ids and folds say)", raw_shape)
    record_dtype = record.str("dtype", STORE_DTYPES)
    if record_dtype != dtype:
        record.fail(record.key("dtype"), f"the entry's dtype {dtype!r}", record_dtype)
    return ArrayRecord(file, checksum, shape, record_dtype)


def _test_record(reader: _Reader, name: str, layout: Layout, *, dtype: str, per_fold: bool) -> ArrayRecord | None:
    value = reader.raw(name)
    if layout.n_test is None:
        if value is not None:
            reader.fail(reader.key(name), "null (the store has no test set)", value)
        return None
    if value is None:
        reader.fail(reader.key(name), "an array record (the store has a test set)", value)
    if per_fold:
        return _array_record(reader, name, shape=(layout.n_test, layout.n_classes), dtype=dtype)
    raw_shape = value.get("shape") if isinstance(value, dict) else None
    n_views = raw_shape[0] if isinstance(raw_shape, list) and raw_shape else None
    if n_views not in (1, layout.n_folds) or isinstance(n_views, bool):
        reader.fail(f"{reader.key(name)}.shape", f"[{layout.n_folds} or 1, {layout.n_test}, {layout.n_classes}]", raw_shape)
    return _array_record(reader, name, shape=(n_views, layout.n_test, layout.n_classes), dtype=dtype)


def _read_entry_v1(document: Any, path: Path, name: str, layout: Layout) -> EntryManifest:
    r = _Reader(document, path)
    if r.str("name") != name:
        r.fail("name", f"the entry folder's name {name!r}", r.raw("name"))
    dtype = r.str("dtype", STORE_DTYPES)
    n_classes = r.int("n_classes", low=2)
    if n_classes != layout.n_classes:
        r.fail("n_classes", f"{layout.n_classes} (the store's classes)", n_classes)
    complete = r.bool("complete")
    meta = r.mapping("meta")
    fold_meta = {}
    for key, value in r.mapping("fold_meta").items():
        fold = _fold_key(r, "fold_meta", key, layout.n_folds)
        if not isinstance(value, dict):
            r.fail(f"fold_meta.{key}", "a JSON object", value)
        fold_meta[fold] = value
    present = r.raw("folds_present")
    if (not isinstance(present, list) or any(isinstance(k, bool) or not isinstance(k, int) for k in present)
            or len(set(present)) != len(present) or any(not 0 <= k < layout.n_folds for k in present)):
        r.fail("folds_present", f"a list of distinct fold indices in 0..{layout.n_folds - 1}", present)
    folds_raw = r.mapping("folds")
    oof = test = None
    folds: dict[int, FoldRecord] = {}
    if complete:
        if sorted(present) != list(range(layout.n_folds)):
            r.fail("folds_present", f"every fold 0..{layout.n_folds - 1} (the entry is marked complete)", present)
        if folds_raw:
            r.fail("folds", "{} (a complete entry keeps one OOF and one test array)", folds_raw)
        oof = _array_record(r, "oof", shape=(layout.n_train, layout.n_classes), dtype=dtype)
        test = _test_record(r, "test", layout, dtype=dtype, per_fold=False)
    else:
        for key in ("oof", "test"):
            if r.raw(key) is not None:
                r.fail(key, "null (the entry is incomplete: its arrays are per fold)", r.raw(key))
        keys = {_fold_key(r, "folds", k, layout.n_folds) for k in folds_raw}
        if keys != set(present) or len(present) >= layout.n_folds:
            r.fail("folds", f"one record per fold of folds_present {sorted(present)} (fewer than all folds)",
                   sorted(folds_raw))
        for key in folds_raw:
            fold_reader = r.child("folds").child(key)
            k = int(key)
            folds[k] = FoldRecord(
                oof=_array_record(fold_reader, "oof", shape=(layout.fold_sizes[k], layout.n_classes), dtype=dtype),
                test=_test_record(fold_reader, "test", layout, dtype=dtype, per_fold=True))
    return EntryManifest(
        name=name, complete=complete, kind_written=r.str("kind_written", KINDS_WRITTEN), dtype=dtype,
        n_classes=n_classes, created=r.str("created"), updated=r.str("updated"),
        library_version=r.str("library_version"), meta=meta, fold_meta=fold_meta,
        folds_present=tuple(sorted(present)), oof=oof, test=test, folds=folds)


_ENTRY_READERS = {1: _read_entry_v1}


def read_entry_manifest(document: Any, path: Path, *, name: str, layout: Layout, schema_version: int) -> EntryManifest:
    """Validate an ``entry.json`` document of a store at ``schema_version`` and return it typed."""
    return _ENTRY_READERS[schema_version](document, path, name, layout)


def read_store_manifest(document: dict[str, Any], path: Path) -> StoreManifest:
    """Validate the store manifest (its format and schema version already checked)."""
    r = _Reader(document, path)
    classes = r.raw("classes")
    if (not isinstance(classes, list) or len(classes) < 2
            or not (all(isinstance(c, str) for c in classes)
                    or all(isinstance(c, int) and not isinstance(c, bool) for c in classes))
            or len(set(classes)) != len(classes)):
        r.fail("classes", "a list of at least 2 distinct class labels, all strings or all integers", classes)
    if r.int("n_classes", low=2) != len(classes):
        r.fail("n_classes", f"{len(classes)} (the length of classes)", r.raw("n_classes"))
    n_test = r.int("n_test", low=1, optional=True)
    arrays_reader = r.child("arrays")
    wanted = ("train_ids", "y", "folds") + (("test_ids",) if n_test is not None else ())
    if set(arrays_reader.document) != set(wanted):
        r.fail("arrays", f"records for exactly {list(wanted)}", sorted(arrays_reader.document))
    arrays = {}
    for key in wanted:
        record = arrays_reader.child(key)
        file = record.str("file")
        if _FILE_RE.fullmatch(file) is None:
            record.fail(record.key("file"), "a plain .npy file name inside the store folder", file)
        arrays[key] = (file, check_checksum_tag(record.raw("checksum"), path=path, field=record.key("checksum")))
    created = document.get("created", "")
    if not isinstance(created, str):
        r.fail("created", "a string", created)
    n_folds = r.int("n_folds", low=2)
    labels = document.get("fold_labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != n_folds
                               or any(isinstance(v, bool) or not isinstance(v, int) for v in labels)
                               or labels != sorted(set(labels))):
        r.fail("fold_labels", f"{n_folds} distinct integers in increasing order", labels)
    return StoreManifest(
        schema_version=r.int("schema_version", low=1), library_version=r.str("library_version"), created=created,
        classes=tuple(classes), n_train=r.int("n_train", low=1), n_test=n_test, n_folds=n_folds,
        fold_seed=r.int("fold_seed", low=0, optional=True), dtype=r.str("dtype", STORE_DTYPES), arrays=arrays,
        fold_labels=None if labels is None else tuple(labels))
