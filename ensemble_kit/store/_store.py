"""The logit store: every model's out-of-fold and test logits, aligned to one fold split."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from filelock import FileLock
from numpy.typing import ArrayLike

from ensemble_kit._version import __version__
from ensemble_kit.data.folds import check_folds, make_folds
from ensemble_kit.errors import (
    EntryExistsError,
    EntryIncompleteError,
    EntryNotFoundError,
    FoldMismatchError,
    IdMismatchError,
    NotAStoreError,
    SchemaVersionError,
    ShapeMismatchError,
    StoreCorruptedError,
    StoreError,
    StoreExistsError,
    ValidationError,
)
from ensemble_kit.metrics import get_metric, list_metrics
from ensemble_kit.store._files import (
    check_npy_size,
    read_json,
    read_npy,
    file_matches,
    write_json,
    write_npy,
)
from ensemble_kit.store._validate import check_dtype, check_kind, prepare_scores

if TYPE_CHECKING:
    from ensemble_kit.store._tables import TableLike

__all__ = ["EntryInfo", "LogitStore", "SCHEMA_VERSION"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT_NAME = "ensemble_kit.logit_store"
STORE_MANIFEST = "ensemble_kit_store.json"
ENTRY_MANIFEST = "entry.json"
ENTRIES_DIR = "entries"
LOCKS_DIR = "locks"
# Arrays up to this size are re-hashed on every read; larger ones get a size/header check on
# read and a full hash in verify(), so reading a 400 MB entry stays as fast as np.load.
HASH_ON_READ_BYTES = 16 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+=,-]{0,127}$")
_BASE_ARRAYS = ("train_ids", "y", "folds", "test_ids")


@dataclass(frozen=True)
class EntryInfo:
    """What the store knows about one entry, without reading its arrays.

    Attributes
    ----------
    name : str
        Entry name.
    complete : bool
        True when every fold is present (the entry is listed by :meth:`LogitStore.models`).
    folds_present : tuple of int
        Folds written so far.
    n_folds : int
        Number of folds of the store.
    dtype : str
        Storage dtype of the arrays (``"float32"`` or ``"float16"``).
    kind_written : str
        What the writer passed (``"logits"`` or ``"probs"``); stored values are always logits.
    has_test : bool
        Whether the entry holds test predictions.
    test_folds : int
        Size of the fold axis of the test array (``n_folds``, or 1 for a single test prediction).
    created, updated : str
        ISO-8601 UTC timestamps.
    meta : dict
        User metadata (merged over ``put_fold`` calls; later folds win on shared keys).
    fold_meta : dict
        Metadata given with each ``put_fold`` call, by fold.
    """

    name: str
    complete: bool
    folds_present: tuple[int, ...]
    n_folds: int
    dtype: str
    kind_written: str
    has_test: bool
    test_folds: int
    created: str
    updated: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    fold_meta: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def missing_folds(self) -> tuple[int, ...]:
        return tuple(k for k in range(self.n_folds) if k not in self.folds_present)


class LogitStore:
    """Out-of-fold and test logits of many models, aligned to one fixed fold split.

    A store is a directory of plain ``.npy`` arrays and JSON manifests (see
    ``docs/store-format.md``). Create one with :meth:`create`, open it with :meth:`open`,
    write predictions with :meth:`put` (all folds at once) or :meth:`put_fold` (one fold per
    job, several processes may write at the same time), read them with :meth:`oof` and
    :meth:`test`. Values are always stored as logits (probabilities are converted to
    log-probabilities on write). Nothing is ever unpickled, so a store from someone else is
    safe to open.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "store")
    >>> y = np.array([0, 1] * 10)
    >>> store = LogitStore.create(path, train_ids=np.arange(20), y=y, classes=[0, 1],
    ...                           n_folds=2, seed=0)
    >>> store.put("coin_flip", oof=np.zeros((20, 2)), kind="logits")
    EntryInfo(name='coin_flip', complete=True, ...)
    >>> store.models()
    ['coin_flip']
    >>> LogitStore.open(path).oof("coin_flip").shape
    (20, 2)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        manifest_path = self._path / STORE_MANIFEST
        if not self._path.is_dir():
            raise NotAStoreError(
                f"{str(self._path)!r} is not a logit store: no such directory. "
                "Create one with LogitStore.create(path, train_ids, y, classes)."
            )
        if not manifest_path.is_file():
            raise NotAStoreError(
                f"{str(self._path)!r} is not a logit store: {STORE_MANIFEST} is missing. "
                "Create one with LogitStore.create(path, train_ids, y, classes)."
            )
        try:
            manifest = read_json(manifest_path)
        except StoreCorruptedError as exc:
            raise NotAStoreError(f"{str(self._path)!r} is not a readable logit store: {exc}") from exc
        if manifest.get("format") != FORMAT_NAME:
            raise NotAStoreError(
                f"{str(manifest_path)!r} does not describe a logit store "
                f"(format {manifest.get('format')!r}, expected {FORMAT_NAME!r})."
            )
        schema = manifest.get("schema_version")
        if not isinstance(schema, int) or schema > SCHEMA_VERSION or schema < 1:
            raise SchemaVersionError(
                f"Store {str(self._path)!r} has schema version {schema!r} (written by "
                f"ensemble_kit {manifest.get('library_version', '?')}); this ensemble_kit "
                f"{__version__} reads schema versions 1 to {SCHEMA_VERSION}. Upgrade ensemble_kit "
                "to open it; the store is left untouched."
            )
        self._manifest = manifest
        self._classes: list[Any] = list(manifest["classes"])
        self._dtype: str = manifest["dtype"]
        base: dict[str, np.ndarray | None] = {}
        for key in _BASE_ARRAYS:
            record = manifest["arrays"].get(key)
            if record is None:
                base[key] = None
                continue
            file = self._path / record["file"]
            if not file.is_file():
                raise StoreCorruptedError(f"Store file {str(file)!r} ({key}) is missing.")
            if not file_matches(file, record["checksum"]):
                raise StoreCorruptedError(
                    f"Store file {str(file)!r} ({key}) does not match its checksum: it was "
                    "modified or corrupted. The fold split cannot be trusted; restore it from a copy."
                )
            base[key] = read_npy(file)
            base[key].flags.writeable = False
        self._train_ids: np.ndarray = base["train_ids"]  # type: ignore[assignment]
        self._y: np.ndarray = base["y"]  # type: ignore[assignment]
        self._folds: np.ndarray = base["folds"]  # type: ignore[assignment]
        self._test_ids: np.ndarray | None = base["test_ids"]
        self._n_folds = int(manifest["n_folds"])
        self._fold_rows = [np.flatnonzero(self._folds == k) for k in range(self._n_folds)]

    # ------------------------------------------------------------------ creation / opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        train_ids: ArrayLike,
        y: ArrayLike,
        classes: Sequence[Any],
        *,
        n_folds: int | None = None,
        seed: int = 0,
        folds: ArrayLike | None = None,
        test_ids: ArrayLike | None = None,
        dtype: str = "float32",
    ) -> LogitStore:
        """Create a new store and fix its fold split.

        Parameters
        ----------
        path : path-like
            Directory to create. It must not exist, or be empty.
        train_ids : array-like of shape (n_train,)
            Unique sample ids (integers or strings). Every array is stored in this order.
        y : array-like of shape (n_train,)
            Labels, each one of ``classes``. Stored as class indices (``store.y``).
        classes : sequence
            Class labels (unique strings or integers), in column order of every logit array.
        n_folds : int, default 5
            Number of stratified folds (ignored when ``folds`` is given).
        seed : int, default 0
            Seed of the stratified shuffle.
        folds : array-like of shape (n_train,), optional
            Explicit fold index per sample (0..K-1), e.g. a group split made elsewhere.
        test_ids : array-like of shape (n_test,), optional
            Unique ids of the test samples; when given, every entry must carry test logits.
        dtype : {"float32", "float16"}
            Storage dtype of prediction arrays (reads always return float32).
        """
        target = Path(path)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise StoreExistsError(
                f"Cannot create a store at {str(target)!r}: it already exists and is not an "
                "empty directory. Open it with LogitStore.open(), or choose another path."
            )
        dtype = check_dtype(dtype)
        class_list = _check_classes(classes)
        train = _normalize_ids(train_ids, what="train_ids")
        y_index = _labels_to_indices(y, class_list, train)
        if folds is not None:
            fold_array = check_folds(folds, len(train))
            fold_seed: int | None = None
        else:
            fold_array = make_folds(y_index, 5 if n_folds is None else n_folds, seed=seed)
            fold_seed = int(seed)
        test = _normalize_ids(test_ids, what="test_ids") if test_ids is not None else None
        arrays = {"train_ids": train, "y": y_index, "folds": fold_array, "test_ids": test}

        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.creating-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            records = {}
            for key, array in arrays.items():
                if array is None:
                    continue
                records[key] = {"file": f"{key}.npy", "checksum": write_npy(staging / f"{key}.npy", array)}
            (staging / ENTRIES_DIR).mkdir()
            (staging / LOCKS_DIR).mkdir()
            write_json(
                staging / STORE_MANIFEST,
                {
                    "format": FORMAT_NAME,
                    "schema_version": SCHEMA_VERSION,
                    "library_version": __version__,
                    "created": _now(),
                    "classes": class_list,
                    "n_classes": len(class_list),
                    "n_train": int(len(train)),
                    "n_test": None if test is None else int(len(test)),
                    "n_folds": int(fold_array.max()) + 1,
                    "fold_seed": fold_seed,
                    "dtype": dtype,
                    "arrays": records,
                },
            )
            if target.exists():
                target.rmdir()  # empty, checked above
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("Created logit store %s (%d train, %d folds)", target, len(train), fold_array.max() + 1)
        return cls(target)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> LogitStore:
        """Open an existing store (cheap: arrays are read only when asked for).

        Raises
        ------
        NotAStoreError
            The path is not a store.
        SchemaVersionError
            The store was written with a newer schema than this version reads.
        StoreCorruptedError
            The ids, labels or folds do not match their checksums.
        """
        return cls(path)

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> Path:
        return self._path

    @property
    def classes(self) -> list[Any]:
        """Class labels, in the column order of every stored array."""
        return list(self._classes)

    @property
    def n_classes(self) -> int:
        return len(self._classes)

    @property
    def y(self) -> np.ndarray:
        """Class index (0..C-1) of every training sample, in ``train_ids`` order."""
        return self._y

    @property
    def folds(self) -> np.ndarray:
        """Fold index of every training sample, in ``train_ids`` order."""
        return self._folds

    @property
    def n_folds(self) -> int:
        return self._n_folds

    @property
    def train_ids(self) -> np.ndarray:
        return self._train_ids

    @property
    def test_ids(self) -> np.ndarray | None:
        return self._test_ids

    @property
    def dtype(self) -> str:
        return self._dtype

    def fold_indices(self, fold: int) -> np.ndarray:
        """Row indices (into ``train_ids``) of the samples in ``fold``, ascending."""
        self._check_fold(fold)
        return self._fold_rows[fold]

    def __repr__(self) -> str:
        return (
            f"LogitStore({str(self._path)!r}, n_train={len(self._train_ids)}, "
            f"n_test={0 if self._test_ids is None else len(self._test_ids)}, "
            f"n_classes={self.n_classes}, n_folds={self._n_folds}, models={len(self.models())})"
        )

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.models()

    # ------------------------------------------------------------------ writing
    def put(
        self,
        name: str,
        oof: ArrayLike,
        test: ArrayLike | None = None,
        *,
        kind: Literal["logits", "probs"] = "logits",
        meta: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> EntryInfo:
        """Store a complete entry: OOF predictions for every training sample (and test ones).

        Parameters
        ----------
        name : str
            Entry name: letters, digits and ``_ . @ + = , -`` (e.g. ``"convnext_atto@224"``).
        oof : array-like of shape (n_train, n_classes)
            Out-of-fold predictions in ``train_ids`` order.
        test : array-like of shape (n_folds, n_test, n_classes) or (n_test, n_classes)
            Test predictions of each fold model, or one prediction (stored with a fold axis of
            size 1). Required when the store has test ids, refused otherwise.
        kind : {"logits", "probs"}
            What the values are. Probabilities are validated and stored as log-probabilities.
        meta : mapping, optional
            JSON-serialisable metadata (config, scores, versions...).
        overwrite : bool
            Replace an existing entry. Without it, writing an existing name raises
            :class:`EntryExistsError` and leaves the store unchanged.
        """
        self._check_name(name)
        check_kind(kind)
        meta_doc = _check_meta(meta, name)
        where = f"entry {name!r}"
        oof_array = prepare_scores(
            oof, where=f"{where} oof", shape=(len(self._train_ids), self.n_classes),
            axes=("train rows", "classes"), kind=kind, dtype=self._dtype, row_ids=self._train_ids,
        )
        test_array = self._prepare_test(test, where=where, kind=kind, per_fold=False)
        with self._lock(name):
            existing = self._read_entry(name)
            if existing is not None and not overwrite:
                state = "complete" if existing["complete"] else "partially written"
                raise EntryExistsError(
                    f"Entry {name!r} already exists ({state}). Pass overwrite=True to replace it, "
                    "or choose another name; the stored entry is unchanged."
                )
            entry_dir = self._entry_dir(name)
            entry_dir.mkdir(parents=True, exist_ok=True)
            now = _now()
            document = {
                "name": name,
                "complete": True,
                "kind_written": kind,
                "dtype": self._dtype,
                "n_classes": self.n_classes,
                "created": existing["created"] if existing else now,
                "updated": now,
                "library_version": __version__,
                "meta": meta_doc,
                "fold_meta": {},
                "folds_present": list(range(self._n_folds)),
                "oof": self._write_array(entry_dir, "oof", oof_array),
                "test": None if test_array is None else self._write_array(entry_dir, "test", test_array),
                "folds": {},
            }
            self._commit(name, document)
        logger.info("Stored entry %r (%s)", name, "overwritten" if existing else "new")
        return self._info(document)

    def put_fold(
        self,
        name: str,
        fold: int,
        oof: ArrayLike,
        test: ArrayLike | None = None,
        *,
        ids: ArrayLike | None = None,
        kind: Literal["logits", "probs"] = "logits",
        meta: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> EntryInfo:
        """Store one fold of an entry; the entry becomes visible when all folds are present.

        Several processes may write different folds (or entries) of one store at once.

        Parameters
        ----------
        name : str
            Entry name.
        fold : int
            Fold index in ``0..n_folds-1``.
        oof : array-like of shape (n_in_fold, n_classes)
            Predictions for the samples of ``fold``, in the order of
            :meth:`fold_indices` (ascending ``train_ids`` position), unless ``ids`` says otherwise.
        test : array-like of shape (n_test, n_classes)
            This fold model's test predictions. Required when the store has test ids.
        ids : array-like of shape (n_in_fold,), optional
            Sample ids of the ``oof`` rows. When given they must be exactly fold ``fold``'s
            ids (any order; rows are reordered to the store's order).
        kind, meta, overwrite
            As in :meth:`put`. ``overwrite=True`` replaces this fold only.
        """
        self._check_name(name)
        check_kind(kind)
        self._check_fold(fold, name=name)
        meta_doc = _check_meta(meta, name)
        rows = self._fold_rows[fold]
        where = f"entry {name!r} fold {fold}"
        oof_values = np.asarray(oof)
        if ids is not None:
            oof_values = oof_values[self._fold_order(ids, fold, name=name, n_rows=len(oof_values))]
        if oof_values.ndim == 2 and oof_values.shape[0] != len(rows):
            raise FoldMismatchError(
                f"{where}: fold {fold} holds {len(rows)} training samples but oof has "
                f"{oof_values.shape[0]} rows. Pass exactly the rows of store.fold_indices({fold})."
            )
        oof_array = prepare_scores(
            oof_values, where=f"{where} oof", shape=(len(rows), self.n_classes),
            axes=(f"rows of fold {fold}", "classes"), kind=kind, dtype=self._dtype,
            row_ids=self._train_ids[rows],
        )
        test_array = self._prepare_test(test, where=where, kind=kind, per_fold=True)
        with self._lock(name):
            existing = self._read_entry(name)
            now = _now()
            if existing is None:
                document: dict[str, Any] = {
                    "name": name, "complete": False, "kind_written": kind, "dtype": self._dtype,
                    "n_classes": self.n_classes, "created": now, "updated": now,
                    "library_version": __version__, "meta": {}, "fold_meta": {},
                    "folds_present": [], "oof": None, "test": None, "folds": {},
                }
            else:
                document = existing
            if fold in document["folds_present"] and not overwrite:
                raise EntryExistsError(
                    f"Fold {fold} of entry {name!r} is already stored. Pass overwrite=True to "
                    "replace it; the stored fold is unchanged."
                )
            entry_dir = self._entry_dir(name)
            entry_dir.mkdir(parents=True, exist_ok=True)
            document["meta"] = {**document["meta"], **meta_doc}
            document["fold_meta"] = {**document["fold_meta"], str(fold): meta_doc}
            document["updated"] = now
            document["library_version"] = __version__
            if document["complete"]:
                self._patch_complete(document, fold, oof_array, test_array)
            else:
                document["folds"][str(fold)] = {
                    "oof": self._write_array(entry_dir, f"fold{fold}-oof", oof_array),
                    "test": None if test_array is None
                    else self._write_array(entry_dir, f"fold{fold}-test", test_array),
                }
                document["folds_present"] = sorted({*document["folds_present"], fold})
                if len(document["folds_present"]) == self._n_folds:
                    self._consolidate(document)
            self._commit(name, document)
        logger.info("Stored fold %d of entry %r", fold, name)
        return self._info(document)

    def remove(self, name: str) -> None:
        """Delete an entry (complete or not). Its directory disappears atomically."""
        self._check_name(name)
        with self._lock(name):
            entry_dir = self._entry_dir(name)
            if not entry_dir.exists():
                raise EntryNotFoundError(self._not_found_message(name))
            trash = self._path / f".trash-{uuid.uuid4().hex[:8]}"
            os.rename(entry_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("Removed entry %r", name)

    # ------------------------------------------------------------------ reading
    def models(self) -> list[str]:
        """Names of complete entries (every fold present), sorted."""
        return sorted(n for n, doc in self._entries().items() if doc["complete"])

    def incomplete(self) -> dict[str, tuple[int, ...]]:
        """Entries still missing folds, with the missing fold indices."""
        return {
            name: self._info(doc).missing_folds
            for name, doc in sorted(self._entries().items())
            if not doc["complete"]
        }

    def entry(self, name: str) -> EntryInfo:
        """Metadata of one entry, complete or not."""
        self._check_name(name)
        document = self._read_entry(name)
        if document is None:
            raise EntryNotFoundError(self._not_found_message(name))
        return self._info(document)

    def oof(self, names: str | Sequence[str], *, mmap: bool = False) -> np.ndarray:
        """Out-of-fold logits in ``train_ids`` order, as float32.

        Returns shape ``(n_train, C)`` for one name, ``(M, n_train, C)`` for a list.
        ``mmap=True`` (single name, float32 store) returns a read-only memory map instead of
        reading the file.
        """
        if isinstance(names, str):
            return self._read_complete(names, "oof", mmap=mmap)
        names = self._check_names(names)
        out = np.empty((len(names), len(self._train_ids), self.n_classes), dtype=np.float32)
        for i, name in enumerate(names):
            out[i] = self._read_complete(name, "oof", mmap=True)
        return out

    def test(
        self,
        names: str | Sequence[str],
        reduce: Literal["mean"] | None = "mean",
        *,
        mmap: bool = False,
    ) -> np.ndarray:
        """Test logits, averaged over the fold models (``reduce="mean"``, in logit space).

        Returns ``(n_test, C)`` for one name and ``(M, n_test, C)`` for a list; with
        ``reduce=None`` the fold axis is kept: ``(F, n_test, C)`` / ``(M, F, n_test, C)``, where
        F is ``n_folds`` (or 1 for entries written with a single test prediction).
        """
        if self._test_ids is None:
            raise StoreError(
                f"Store {str(self._path)!r} has no test set (created without test_ids), so no "
                "entry has test logits."
            )
        if reduce not in ("mean", None):
            raise ValidationError(f"reduce must be 'mean' or None; got {reduce!r}.")

        def one(name: str) -> np.ndarray:
            array = self._read_complete(name, "test", mmap=mmap or reduce == "mean")
            return array.mean(axis=0, dtype=np.float32) if reduce == "mean" else array

        if isinstance(names, str):
            return one(names)
        names = self._check_names(names)
        arrays = [one(n) for n in names]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            listing = ", ".join(f"{n}: {a.shape}" for n, a in zip(names, arrays))
            raise ShapeMismatchError(
                f"Cannot stack test arrays with different fold axes ({listing}); use "
                "reduce='mean'."
            )
        return np.stack(arrays)

    def leaderboard(self, metric: str = "log_loss") -> pd.DataFrame:
        """One row per complete model: OOF scores on every metric, times and metadata.

        Sorted by ``metric``, best first. Metadata keys appear as ``meta.<key>`` columns.
        """
        main = get_metric(metric)
        rows = []
        complete = {n: doc for n, doc in self._entries().items() if doc["complete"]}
        for name in sorted(complete):
            info = self._info(complete[name])
            logits = self._read_complete(name, "oof", mmap=True)
            row: dict[str, Any] = {"model": name}
            for metric_name in [main.name] + [m for m in list_metrics() if m != main.name]:
                row[metric_name] = get_metric(metric_name)(self._y, logits, kind="logits")
            row.update({"has_test": info.has_test, "created": info.created, "updated": info.updated})
            for key, value in info.meta.items():
                row[f"meta.{key}"] = value if _is_scalar(value) else json.dumps(value, sort_keys=True)
            rows.append(row)
        columns = ["model", *[main.name], *[m for m in list_metrics() if m != main.name]]
        table = pd.DataFrame(rows, columns=None if rows else columns)
        if rows:
            table = table.sort_values(main.name, ascending=not main.greater_is_better, kind="stable")
        return table.reset_index(drop=True)

    # ------------------------------------------------------------------ tables
    def import_predictions(
        self,
        name: str,
        table_or_path: TableLike,
        *,
        test: TableLike | None = None,
        id_col: str = "id",
        kind: Literal["logits", "probs"] = "probs",
        meta: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> EntryInfo:
        """Bring your own predictions from a CSV/Parquet file or a DataFrame.

        The table has an id column and one column per class (named ``str(class)``). Its rows
        are the OOF predictions of every training sample; test rows come either from ``test``
        or, when the table has a ``split`` column, from its rows marked ``"test"`` (the layout
        :meth:`export` writes, so ``export`` -> ``import_predictions`` round-trips).
        """
        from ensemble_kit.store._tables import read_prediction_tables

        oof, test_values = read_prediction_tables(self, name, table_or_path, test=test, id_col=id_col)
        return self.put(name, oof, test_values, kind=kind, meta=meta, overwrite=overwrite)

    def export(self, name: str, path: str | os.PathLike[str], *, kind: Literal["logits", "probs"] = "probs") -> Path:
        """Write an entry as one CSV or Parquet table (by the file's extension).

        Columns: ``id``, ``split`` (``"oof"`` or ``"test"``), ``fold`` (the sample's fold for
        OOF rows, -1 for test rows), then one column per class. Test rows hold the
        fold-averaged logits. ``kind="probs"`` (default) writes softmax probabilities,
        ``kind="logits"`` the stored logits.
        """
        from ensemble_kit.store._tables import write_prediction_table

        return write_prediction_table(self, name, Path(path), kind=kind)

    # ------------------------------------------------------------------ verification
    def verify(self) -> None:
        """Re-check every checksum and invariant of the store.

        Checks the ids/labels/folds, every entry manifest, that each referenced array exists,
        has the recorded checksum, shape and dtype, holds only finite values, and that complete
        entries cover every training sample exactly once.

        Raises
        ------
        StoreCorruptedError
            Listing every problem found (entry, file and what is wrong).
        """
        problems: list[str] = []
        for key in _BASE_ARRAYS:
            record = self._manifest["arrays"].get(key)
            if record is None:
                continue
            file = self._path / record["file"]
            if not file.is_file() or not file_matches(file, record["checksum"]):
                problems.append(f"{key}: {file.name} is missing or does not match its checksum")
        entries_dir = self._path / ENTRIES_DIR
        n_checked = 0
        for entry_dir in sorted(p for p in entries_dir.iterdir() if p.is_dir()):
            name = entry_dir.name
            manifest = entry_dir / ENTRY_MANIFEST
            if not manifest.exists():
                continue  # a first write that was interrupted: nothing was ever published
            try:
                document = read_json(manifest)
                problems.extend(self._verify_entry(name, entry_dir, document))
            except (StoreCorruptedError, KeyError, TypeError) as exc:
                problems.append(f"entry {name!r}: unreadable manifest ({exc})")
            n_checked += 1
        if problems:
            raise StoreCorruptedError(
                f"Store {str(self._path)!r} failed verification with {len(problems)} problem(s):\n  - "
                + "\n  - ".join(problems)
            )
        logger.info("Verified store %s: %d entries OK", self._path, n_checked)

    def _verify_entry(self, name: str, entry_dir: Path, document: dict[str, Any]) -> list[str]:
        problems = []
        records: list[tuple[str, dict[str, Any], tuple[int, ...]]] = []
        n_train, n_classes = len(self._train_ids), self.n_classes
        n_test = None if self._test_ids is None else len(self._test_ids)
        if document["complete"]:
            records.append(("oof", document["oof"], (n_train, n_classes)))
            if document["test"] is not None:
                test_folds = document["test"]["shape"][0]
                if test_folds not in (1, self._n_folds):
                    problems.append(f"entry {name!r}: test fold axis is {test_folds}")
                records.append(("test", document["test"], (test_folds, n_test, n_classes)))
            if sorted(document["folds_present"]) != list(range(self._n_folds)):
                problems.append(f"entry {name!r}: marked complete but folds are {document['folds_present']}")
        else:
            for fold_key, fold_doc in document["folds"].items():
                k = int(fold_key)
                records.append((f"fold {k} oof", fold_doc["oof"], (len(self._fold_rows[k]), n_classes)))
                if fold_doc["test"] is not None:
                    records.append((f"fold {k} test", fold_doc["test"], (n_test, n_classes)))
        if (n_test is not None) != any(what.endswith("test") for what, _, _ in records) and records:
            problems.append(f"entry {name!r}: test predictions present/absent inconsistently with the store")
        for what, record, shape in records:
            file = entry_dir / record["file"]
            label = f"entry {name!r} {what} ({file.name})"
            if not file.is_file():
                problems.append(f"{label}: file is missing")
                continue
            if not file_matches(file, record["checksum"]):
                problems.append(f"{label}: checksum mismatch (file modified or corrupted)")
                continue
            array = read_npy(file, mmap=True)
            if tuple(array.shape) != shape or array.dtype.name != document["dtype"]:
                problems.append(f"{label}: shape {array.shape} {array.dtype}, expected {shape} {document['dtype']}")
            elif not _all_finite(array):
                problems.append(f"{label}: holds NaN or inf")
        return problems

    # ------------------------------------------------------------------ internals
    def _entries(self) -> dict[str, dict[str, Any]]:
        found = {}
        entries_dir = self._path / ENTRIES_DIR
        for entry_dir in entries_dir.iterdir():
            document = self._read_entry(entry_dir.name) if entry_dir.is_dir() else None
            if document is not None:
                found[entry_dir.name] = document
        return found

    def _entry_dir(self, name: str) -> Path:
        return self._path / ENTRIES_DIR / name

    def _lock(self, name: str) -> FileLock:
        return FileLock(str(self._path / LOCKS_DIR / f"{name}.lock"))

    def _read_entry(self, name: str) -> dict[str, Any] | None:
        manifest = self._entry_dir(name) / ENTRY_MANIFEST
        try:
            return read_json(manifest)
        except FileNotFoundError:
            return None

    def _commit(self, name: str, document: dict[str, Any]) -> None:
        """Publish ``document`` (one atomic rename), then delete files it no longer references."""
        entry_dir = self._entry_dir(name)
        write_json(entry_dir / ENTRY_MANIFEST, document)
        referenced = {ENTRY_MANIFEST} | {r["file"] for r in _array_records(document)}
        for file in entry_dir.iterdir():
            # Safe under the entry lock: every writer of this entry holds it while writing,
            # so an unreferenced file is an old version or a killed writer's leftover.
            if file.name not in referenced:
                file.unlink(missing_ok=True)

    def _write_array(self, entry_dir: Path, stem: str, array: np.ndarray) -> dict[str, Any]:
        file = f"{stem}-{uuid.uuid4().hex[:12]}.npy"
        digest = write_npy(entry_dir / file, array)
        return {"file": file, "checksum": digest, "shape": list(array.shape), "dtype": array.dtype.name}

    def _load(self, name: str, record: dict[str, Any], *, mmap: bool) -> np.ndarray:
        file = self._entry_dir(name) / record["file"]
        check_npy_size(file)
        array = read_npy(file, mmap=mmap)
        if list(array.shape) != record["shape"]:
            raise StoreCorruptedError(
                f"Entry {name!r}: {file.name} has shape {array.shape}, manifest says {record['shape']}."
            )
        if not mmap and array.nbytes <= HASH_ON_READ_BYTES and not file_matches(file, record["checksum"]):
            raise StoreCorruptedError(
                f"Entry {name!r}: {file.name} does not match its checksum (modified or "
                "corrupted). Re-write the entry (overwrite=True) or remove it."
            )
        return array

    def _read_complete(self, name: str, part: str, *, mmap: bool) -> np.ndarray:
        self._check_name(name)
        for attempt in range(2):
            document = self._read_entry(name)
            if document is None:
                raise EntryNotFoundError(self._not_found_message(name))
            if not document["complete"]:
                missing = self._info(document).missing_folds
                raise EntryIncompleteError(
                    f"Entry {name!r} is incomplete: folds {list(missing)} are missing. Write them "
                    "with put_fold(), or remove the entry."
                )
            if part == "test" and document["test"] is None:
                raise EntryNotFoundError(f"Entry {name!r} has no test predictions.")
            try:
                array = self._load(name, document[part], mmap=mmap)
                break
            except FileNotFoundError:
                if attempt:  # an overwrite replaced the file between manifest and open
                    raise
        if array.dtype != np.float32:
            return array.astype(np.float32)
        return array

    def _prepare_test(self, test: ArrayLike | None, *, where: str, kind: str, per_fold: bool) -> np.ndarray | None:
        if self._test_ids is None:
            if test is not None:
                raise ShapeMismatchError(
                    f"{where}: test predictions given, but the store has no test ids. Create the "
                    "store with test_ids=... to keep test predictions."
                )
            return None
        if test is None:
            raise ShapeMismatchError(
                f"{where}: test predictions are required: the store has {len(self._test_ids)} "
                "test ids and every entry must cover them."
            )
        n_test, n_classes = len(self._test_ids), self.n_classes
        values = np.asarray(test)
        if per_fold or values.ndim != 3:
            shape: tuple[int, ...] = (n_test, n_classes)
            axes: tuple[str, ...] = ("test rows", "classes")
        else:
            shape, axes = (self._n_folds, n_test, n_classes), ("folds", "test rows", "classes")
        array = prepare_scores(
            values, where=f"{where} test", shape=shape, axes=axes, kind=kind,
            dtype=self._dtype, row_ids=self._test_ids,
        )
        return array if per_fold or array.ndim == 3 else array[None]

    def _patch_complete(self, document: dict[str, Any], fold: int, oof: np.ndarray, test: np.ndarray | None) -> None:
        name = document["name"]
        entry_dir = self._entry_dir(name)
        full_oof = np.array(self._load(name, document["oof"], mmap=True))
        full_oof[self._fold_rows[fold]] = oof
        document["oof"] = self._write_array(entry_dir, "oof", full_oof)
        if test is not None:
            full_test = np.array(self._load(name, document["test"], mmap=True))
            if full_test.shape[0] != self._n_folds:
                raise ShapeMismatchError(
                    f"Entry {name!r} was written with a single test prediction; a per-fold "
                    "overwrite cannot replace one fold of it. Re-write the entry with put()."
                )
            full_test[fold] = test
            document["test"] = self._write_array(entry_dir, "test", full_test)

    def _consolidate(self, document: dict[str, Any]) -> None:
        """Merge per-fold arrays into one OOF and one test array, so reads are single files."""
        name = document["name"]
        entry_dir = self._entry_dir(name)
        oof = np.empty((len(self._train_ids), self.n_classes), dtype=self._dtype)
        tests = []
        for k in range(self._n_folds):
            fold_doc = document["folds"][str(k)]
            oof[self._fold_rows[k]] = self._load(name, fold_doc["oof"], mmap=True)
            if fold_doc["test"] is not None:
                tests.append(self._load(name, fold_doc["test"], mmap=True))
        document["oof"] = self._write_array(entry_dir, "oof", oof)
        document["test"] = self._write_array(entry_dir, "test", np.stack(tests)) if tests else None
        document["folds"] = {}
        document["complete"] = True

    def _info(self, document: dict[str, Any]) -> EntryInfo:
        test = document["test"]
        if document["complete"]:
            test_folds = test["shape"][0] if test else 0
        else:
            test_folds = self._n_folds if self._test_ids is not None else 0
        return EntryInfo(
            name=document["name"],
            complete=document["complete"],
            folds_present=tuple(document["folds_present"]),
            n_folds=self._n_folds,
            dtype=document["dtype"],
            kind_written=document["kind_written"],
            has_test=self._test_ids is not None,
            test_folds=test_folds,
            created=document["created"],
            updated=document["updated"],
            meta=document["meta"],
            fold_meta={int(k): v for k, v in document["fold_meta"].items()},
        )

    def _check_name(self, name: object) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValidationError(
                f"Invalid entry name {name!r}: use 1-128 letters, digits and '_ . @ + = , -', "
                "starting with a letter or digit (e.g. 'convnext_atto@224')."
            )

    def _check_names(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        if not names:
            raise ValidationError("names must list at least one entry.")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValidationError(f"names lists entries more than once: {duplicates}.")
        return names

    def _check_fold(self, fold: object, *, name: str | None = None) -> None:
        if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < self._n_folds:
            prefix = f"Entry {name!r}: " if name else ""
            raise FoldMismatchError(
                f"{prefix}fold must be an integer in 0..{self._n_folds - 1} (the store has "
                f"{self._n_folds} folds); got {fold!r}."
            )

    def _fold_order(self, ids: ArrayLike, fold: int, *, name: str, n_rows: int) -> np.ndarray:
        """Permutation putting rows labelled ``ids`` into the store's order for ``fold``."""
        given = [str(i) for i in np.asarray(ids).tolist()]
        if len(given) != n_rows:
            raise FoldMismatchError(f"Entry {name!r} fold {fold}: {len(given)} ids for {n_rows} oof rows.")
        expected = [str(i) for i in self._train_ids[self._fold_rows[fold]].tolist()]
        position = {sample: i for i, sample in enumerate(given)}
        if len(position) != len(given):
            dup = sorted({s for s in given if given.count(s) > 1})[:10]
            raise IdMismatchError(f"Entry {name!r} fold {fold}: duplicated ids {dup}.")
        missing = [s for s in expected if s not in position]
        extra = sorted(set(given) - set(expected))
        if missing or extra:
            raise FoldMismatchError(
                f"Entry {name!r}: the rows given are not fold {fold}'s samples: "
                f"{len(missing)} of its ids missing (e.g. {missing[:5]}), {len(extra)} ids from other "
                f"folds or unknown (e.g. {extra[:5]})."
            )
        return np.array([position[s] for s in expected], dtype=np.int64)

    def _not_found_message(self, name: str) -> str:
        known = sorted(self._entries())
        return f"No entry {name!r} in store {str(self._path)!r}. Stored entries: {known or 'none'}."


# ---------------------------------------------------------------------- helpers
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _array_records(document: dict[str, Any]) -> list[dict[str, Any]]:
    records = [document.get("oof"), document.get("test")]
    for fold_doc in document.get("folds", {}).values():
        records += [fold_doc.get("oof"), fold_doc.get("test")]
    return [r for r in records if r]


def _all_finite(array: np.ndarray, chunk_rows: int = 1 << 16) -> bool:
    flat = array.reshape(-1, array.shape[-1])
    return all(np.isfinite(flat[i : i + chunk_rows]).all() for i in range(0, len(flat), chunk_rows))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _check_meta(meta: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValidationError(f"Entry {name!r}: meta must be a mapping; got {type(meta).__name__}.")
    from ensemble_kit.store._files import _json_default

    try:
        return json.loads(json.dumps(dict(meta), allow_nan=False, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"Entry {name!r}: meta is not JSON-serialisable: {exc}") from exc


def _check_classes(classes: Sequence[Any]) -> list[Any]:
    values = np.asarray(classes).tolist() if isinstance(classes, np.ndarray) else list(classes)
    if len(values) < 2:
        raise ValidationError(f"classes must list at least 2 classes; got {values!r}.")
    for c in values:
        if isinstance(c, bool) or not isinstance(c, (str, int, np.integer)):
            raise ValidationError(
                f"Class {c!r} has type {type(c).__name__}; classes must be strings or integers."
            )
    values = [int(c) if isinstance(c, np.integer) else c for c in values]
    if len({type(c) for c in values}) > 1:
        raise ValidationError(f"classes mix strings and integers: {values[:10]}; use one type.")
    seen: set[Any] = set()
    duplicates = [c for c in values if c in seen or seen.add(c)]
    if duplicates:
        raise ValidationError(f"classes must be unique; duplicated: {duplicates[:10]}.")
    return values


def _normalize_ids(ids: ArrayLike, *, what: str) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValidationError(f"{what} must be 1-D; got shape {array.shape}.")
    if array.dtype.kind in "iu":
        normalized = array.astype(np.int64)
    elif array.dtype.kind in "US" or array.dtype == object:
        values = array.tolist()
        if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            normalized = np.asarray(values, dtype=np.int64)
        elif all(isinstance(v, (str, bytes)) for v in values):
            normalized = np.asarray([v.decode() if isinstance(v, bytes) else v for v in values], dtype=str)
        else:
            bad = next(v for v in values if not isinstance(v, (str, bytes)))
            raise ValidationError(f"{what} must be all integers or all strings; found {bad!r} ({type(bad).__name__}).")
    else:
        raise ValidationError(f"{what} must be integers or strings; got dtype {array.dtype}.")
    unique, counts = np.unique(normalized, return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1][:10].tolist()
        raise IdMismatchError(f"{what} must be unique; duplicated ids: {dup} ({int((counts > 1).sum())} in all).")
    return normalized


def _labels_to_indices(y: ArrayLike, classes: list[Any], train_ids: np.ndarray) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(train_ids):
        raise ShapeMismatchError(
            f"y must be 1-D with one label per training id ({len(train_ids)}); got shape {labels.shape}."
        )
    index = pd.Index(classes).get_indexer(pd.Index(labels.tolist()))
    unknown = index < 0
    if unknown.any():
        bad = pd.unique(labels[unknown])[:10].tolist()
        rows = [train_ids[i].item() for i in np.flatnonzero(unknown)[:5]]
        raise ValidationError(
            f"y holds labels that are not in classes: {bad} (e.g. at ids {rows}; "
            f"{int(unknown.sum())} rows in all). classes = {classes[:20]}."
        )
    return index.astype(np.int64)
