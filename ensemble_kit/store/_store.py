"""The logit store: every model's out-of-fold and test logits, aligned to one fold split."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from filelock import FileLock
from numpy.typing import ArrayLike

from ensemble_kit._version import __version__
from ensemble_kit.errors import (
    EntryExistsError,
    EntryIncompleteError,
    EntryNotFoundError,
    FoldMismatchError,
    IdMismatchError,
    NotAStoreError,
    SchemaVersionError,
    ShapeMismatchError,
    StoreBusyError,
    StoreCorruptedError,
    StoreError,
    StoreExistsError,
    UnsafePathError,
    ValidationError,
)
from ensemble_kit.metrics import get_metric, list_metrics
from ensemble_kit.store._artifacts import publish
from ensemble_kit.store._files import load_array, npy_shape, read_json, to_json_safe, write_json, write_npy
from ensemble_kit.store._folds import check_folds, fold_labels, make_folds
from ensemble_kit.store._manifest import (
    ENTRIES_DIR,
    ENTRY_MANIFEST,
    FORMAT_NAME,
    STORE_MANIFEST,
    SCHEMA_VERSION,
    ArrayRecord,
    EntryManifest,
    FoldRecord,
    Layout,
    StoreManifest,
    read_entry_manifest,
    read_store_manifest,
)
from ensemble_kit.store._paths import case_collision, check_name, safe_dir
from ensemble_kit.store._validate import check_dtype, check_kind, match_ids, prepare_scores
from ensemble_kit.store._workspace import LOCKS_DIR, Workspace, check_lock_file, remove_tree

if TYPE_CHECKING:
    from ensemble_kit.store._tables import TableLike

__all__ = ["EntryInfo", "LogitStore", "SCHEMA_VERSION"]

logger = logging.getLogger(__name__)

# Arrays up to this size are re-hashed on every read; larger ones get a size/header check on
# read and a full hash in verify(), so reading a 400 MB entry stays as fast as np.load.
HASH_ON_READ_BYTES = 16 << 20
# A reader racing with back-to-back overwrites of one entry re-reads its manifest this often
# before giving up with StoreBusyError (each overwrite takes milliseconds).
_READ_ATTEMPTS = 50
_BASE_DTYPES = {"train_ids": "iU", "y": "i", "folds": "i", "test_ids": "iU"}


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
    ``docs/store-format.md``). Create one with :meth:`create`, open one with
    ``LogitStore(path)`` (cheap: arrays are read only when asked for), write predictions with :meth:`put` (all folds at once) or :meth:`put_fold` (one fold per
    job, several processes may write at the same time), read them with :meth:`oof` and
    :meth:`test`. Values are always stored as logits (probabilities are converted to
    log-probabilities on write). Nothing is ever unpickled and no link is ever followed, so a
    store from someone else is safe to open; an entry whose files are damaged is reported by
    :meth:`problems` while the healthy entries stay usable.

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
    >>> LogitStore(path).oof("coin_flip").shape
    (20, 2)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open the store at ``path``.

        Raises
        ------
        NotAStoreError
            The path is not a store.
        SchemaVersionError
            The store was written with a newer schema than this version reads.
        StoreCorruptedError
            The manifest breaks its schema, or the ids, labels or folds do not match their
            checksums or the manifest's sizes.
        """
        self._path = Path(path)
        manifest_path = self._path / STORE_MANIFEST
        if not self._path.is_dir():
            raise NotAStoreError(
                f"{str(self._path)!r} is not a logit store: no such directory. "
                "Create one with LogitStore.create(path, train_ids, y, classes)."
            )
        if not os.path.lexists(manifest_path):
            raise NotAStoreError(
                f"{str(self._path)!r} is not a logit store: {STORE_MANIFEST} is missing. "
                "Create one with LogitStore.create(path, train_ids, y, classes)."
            )
        try:
            document = read_json(manifest_path)
        except UnsafePathError:
            raise
        except StoreCorruptedError as exc:
            raise NotAStoreError(f"{str(self._path)!r} is not a readable logit store: {exc}") from exc
        if document.get("format") != FORMAT_NAME:
            raise NotAStoreError(
                f"{str(manifest_path)!r} does not describe a logit store "
                f"(format {document.get('format')!r}, expected {FORMAT_NAME!r})."
            )
        schema = document.get("schema_version")
        if isinstance(schema, bool) or not isinstance(schema, int) or schema > SCHEMA_VERSION or schema < 1:
            raise SchemaVersionError(
                f"Store {str(self._path)!r} has schema version {schema!r} (written by "
                f"ensemble_kit {document.get('library_version', '?')}); this ensemble_kit "
                f"{__version__} reads schema versions 1 to {SCHEMA_VERSION}. Upgrade ensemble_kit "
                "to open it; the store is left untouched."
            )
        self._manifest = read_store_manifest(document, manifest_path)
        self._classes: list[Any] = list(self._manifest.classes)
        self._dtype: str = self._manifest.dtype
        base = {key: self._read_base_array(key) for key in self._manifest.arrays}
        self._train_ids: np.ndarray = base["train_ids"]
        self._y: np.ndarray = base["y"]
        self._folds: np.ndarray = base["folds"]
        self._test_ids: np.ndarray | None = base.get("test_ids")
        self._check_base_arrays(manifest_path)
        self._n_folds = self._manifest.n_folds
        self._fold_rows = [np.flatnonzero(self._folds == k) for k in range(self._n_folds)]
        self._layout = Layout(n_train=len(self._train_ids), n_classes=len(self._classes),
                              n_test=None if self._test_ids is None else len(self._test_ids),
                              fold_sizes=tuple(len(rows) for rows in self._fold_rows))
        self.workspace = Workspace(self._path)

    def _read_base_array(self, key: str) -> np.ndarray:
        file_name, checksum = self._manifest.arrays[key]
        file = self._path / file_name
        if not os.path.lexists(file):
            raise StoreCorruptedError(f"Store file {str(file)!r} ({key}) is missing.", path=file)
        # The header is checked before the (possibly long) hash, so a manifest cannot make
        # open() read or allocate more than the sizes it declares.
        shape, dtype = npy_shape(file)
        expected_rows = self._manifest.n_test if key == "test_ids" else self._manifest.n_train
        if shape != (expected_rows,) or dtype.kind not in _BASE_DTYPES[key]:
            raise StoreCorruptedError(
                f"Store file {str(file)!r} ({key}) has shape {shape} and dtype {dtype}; the store manifest says "
                f"({expected_rows},) of {'integers or strings' if 'U' in _BASE_DTYPES[key] else 'integers'}.",
                path=file, field=f"arrays.{key}")
        try:
            array = load_array(file, checksum=checksum)
        except StoreCorruptedError as exc:
            raise StoreCorruptedError(
                f"Store file {str(file)!r} ({key}) does not match its checksum: it was modified or corrupted. The "
                f"fold split cannot be trusted; restore it from a copy. ({exc})", path=file) from exc
        array.flags.writeable = False
        return array

    def _check_base_arrays(self, manifest_path: Path) -> None:
        """Labels and folds are checked against the manifest's sizes before anything trusts them."""
        n_classes, n_folds = len(self._classes), self._manifest.n_folds
        if self._y.size and (self._y.min() < 0 or self._y.max() >= n_classes):
            raise StoreCorruptedError(f"Store file y.npy holds class indices outside 0..{n_classes - 1}.",
                                      path=self._path / "y.npy")
        used = np.unique(self._folds)
        if len(used) != n_folds or used[0] != 0 or used[-1] != n_folds - 1:
            raise StoreCorruptedError(
                f"{str(manifest_path)!r} says n_folds={n_folds}, but folds.npy uses folds {used[:20].tolist()}: "
                "the manifest or the folds were edited. Restore the store from a copy.",
                path=manifest_path, field="n_folds")

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
            Explicit fold of each sample, e.g. a group split or a competition's folds: any
            integers, mapped to 0..K-1 in sorted order (:attr:`fold_labels` keeps the originals).
        test_ids : array-like of shape (n_test,), optional
            Unique ids of the test samples; when given, every entry must carry test logits.
        dtype : {"float32", "float16"}
            Storage dtype of prediction arrays (reads always return float32).
        """
        target = Path(path)
        if os.path.islink(target):
            raise UnsafePathError(f"Cannot create a store at {str(target)!r}: it is a symbolic link.", path=target)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise StoreExistsError(
                f"Cannot create a store at {str(target)!r}: it already exists and is not an "
                "empty directory. Open it with LogitStore(), or choose another path."
            )
        dtype = check_dtype(dtype)
        class_list = _check_classes(classes)
        train = _normalize_ids(train_ids, what="train_ids")
        if len(train) == 0:
            raise ValidationError("train_ids is empty: a store needs at least one training sample per fold.")
        y_index = _labels_to_indices(y, class_list, train)
        if folds is not None:
            fold_array = check_folds(folds, len(train))
            given_labels: list[int] | None = fold_labels(folds)
            fold_seed: int | None = None
        else:
            fold_array = make_folds(y_index, 5 if n_folds is None else n_folds, seed=seed)
            given_labels, fold_seed = None, int(seed)
        test = _normalize_ids(test_ids, what="test_ids") if test_ids is not None else None
        if test is not None and len(test) == 0:
            raise ValidationError("test_ids is empty; pass test_ids=None for a store without a test set.")
        arrays = {"train_ids": train, "y": y_index, "folds": fold_array, "test_ids": test}

        with publish(target, None) as staging:
            records = {}
            for key, array in arrays.items():
                if array is None:
                    continue
                records[key] = (f"{key}.npy", write_npy(staging / f"{key}.npy", array))
            (staging / ENTRIES_DIR).mkdir()
            (staging / LOCKS_DIR).mkdir()
            manifest = StoreManifest(
                schema_version=SCHEMA_VERSION, library_version=__version__, created=_now(),
                classes=tuple(class_list), n_train=int(len(train)), n_test=None if test is None else int(len(test)),
                n_folds=int(fold_array.max()) + 1, fold_seed=fold_seed, dtype=dtype, arrays=records,
                fold_labels=None if given_labels == list(range(int(fold_array.max()) + 1)) else given_labels)
            write_json(staging / STORE_MANIFEST, manifest.to_json())
        logger.info("Created logit store %s (%d train, %d folds)", target, len(train), fold_array.max() + 1)
        return cls(target)

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
    def fold_labels(self) -> list[int]:
        """The label each fold index had when the folds were given (``[0, .., K-1]`` unless mapped)."""
        return list(self._manifest.fold_labels or range(self._n_folds))

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
            What the values are. Probabilities are validated and stored as log-probabilities;
            values that are plainly probabilities given as logits are refused.
        meta : mapping, optional
            JSON-serialisable metadata (config, scores, versions...).
        overwrite : bool
            Replace an existing entry (also one whose files are damaged). Without it, writing
            an existing name raises :class:`EntryExistsError` and leaves the store unchanged.
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
            existing = self._existing_for_write(name, overwrite=overwrite)
            if existing is not None and not overwrite:
                state = "complete" if existing.complete else "partially written"
                raise EntryExistsError(
                    f"Entry {name!r} already exists ({state}). Pass overwrite=True to replace it, "
                    "or choose another name; the stored entry is unchanged."
                )
            entry_dir = self._entry_dir(name, create=True)
            now = _now()
            manifest = EntryManifest(
                name=name, complete=True, kind_written=kind, dtype=self._dtype, n_classes=self.n_classes,
                created=existing.created if existing else now, updated=now, library_version=__version__,
                meta=meta_doc, folds_present=tuple(range(self._n_folds)),
                oof=self._write_array(entry_dir, "oof", oof_array),
                test=None if test_array is None else self._write_array(entry_dir, "test", test_array))
            self._commit(name, manifest)
        logger.debug("Stored entry %r (%s)", name, "overwritten" if existing else "new")
        return self._info(manifest)

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
        fold = int(fold)
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
            existing = self._existing_for_write(name, overwrite=False)
            now = _now()
            manifest = existing or EntryManifest(
                name=name, complete=False, kind_written=kind, dtype=self._dtype, n_classes=self.n_classes,
                created=now, updated=now, library_version=__version__)
            if fold in manifest.folds_present and not overwrite:
                raise EntryExistsError(
                    f"Fold {fold} of entry {name!r} is already stored. Pass overwrite=True to "
                    "replace it; the stored fold is unchanged."
                )
            entry_dir = self._entry_dir(name, create=True)
            manifest = replace(manifest, meta={**manifest.meta, **meta_doc},
                               fold_meta={**manifest.fold_meta, fold: meta_doc}, updated=now,
                               library_version=__version__)
            if manifest.complete:
                manifest = self._patch_complete(manifest, fold, oof_array, test_array)
            else:
                folds = {**manifest.folds, fold: FoldRecord(
                    oof=self._write_array(entry_dir, f"fold{fold}-oof", oof_array),
                    test=None if test_array is None else self._write_array(entry_dir, f"fold{fold}-test", test_array))}
                manifest = replace(manifest, folds=folds, folds_present=tuple(sorted({*manifest.folds_present, fold})))
                if len(manifest.folds_present) == self._n_folds:
                    manifest = self._consolidate(manifest)
            self._commit(name, manifest)
        logger.debug("Stored fold %d of entry %r", fold, name)
        return self._info(manifest)

    def remove(self, name: str) -> None:
        """Delete an entry (complete, incomplete or damaged) and its training run folder.

        The entry folder disappears atomically; ``runs/<name>/`` (checkpoints and history) goes
        with it, since it belongs to that entry.
        """
        self._check_name(name)
        with self._lock(name):
            entry_dir = self._entry_dir(name)
            if not entry_dir.exists():
                raise EntryNotFoundError(self._not_found_message(name))
            remove_tree(entry_dir, trash_root=self._path)
            self.workspace.remove_run(name)
        logger.info("Removed entry %r", name)

    # ------------------------------------------------------------------ reading
    def models(self) -> list[str]:
        """Names of complete, healthy entries (every fold present), sorted.

        Entries whose manifest is damaged are left out (and named in a warning); see
        :meth:`problems`.
        """
        return sorted(n for n, doc in self._entries().items() if doc.complete)

    def incomplete(self) -> dict[str, tuple[int, ...]]:
        """Entries still missing folds, with the missing fold indices."""
        return {
            name: self._info(doc).missing_folds
            for name, doc in sorted(self._entries().items())
            if not doc.complete
        }

    def problems(self) -> dict[str, str]:
        """Entries that cannot be read, each with what is wrong (file and field).

        A damaged entry (corrupt, edited or planted manifest, a link in place of its folder)
        never makes the rest of the store unusable: it is listed here, left out of
        :meth:`models` and :meth:`incomplete`, and reported by :meth:`leaderboard` and
        :meth:`verify`. Repair it with ``put(..., overwrite=True)`` or :meth:`remove`.
        """
        return self._scan()[1]

    def entry(self, name: str) -> EntryInfo:
        """Metadata of one entry, complete or not."""
        self._check_name(name)
        manifest = self._read_manifest(name)
        if manifest is None:
            raise EntryNotFoundError(self._not_found_message(name))
        return self._info(manifest)

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

        Sorted by ``metric``, best first. Metadata keys appear as ``meta.<key>`` columns. A
        damaged entry gets a row of its own at the end, with empty scores and what is wrong in
        the ``problem`` column (empty for healthy entries).
        """
        main = get_metric(metric)
        metric_names = [main.name] + [m for m in list_metrics() if m != main.name]
        rows, broken = [], []
        healthy, problems = self._scan()
        for name in sorted(n for n, doc in healthy.items() if doc.complete):
            info = self._info(healthy[name])
            try:
                logits = self._read_complete(name, "oof", mmap=True)
            except (StoreCorruptedError, StoreBusyError) as exc:
                broken.append({"model": name, "problem": str(exc)})
                continue
            row: dict[str, Any] = {"model": name}
            for metric_name in metric_names:
                row[metric_name] = get_metric(metric_name)(self._y, logits, kind="logits")
            row.update({"has_test": info.has_test, "created": info.created, "updated": info.updated, "problem": ""})
            for key, value in info.meta.items():
                row[f"meta.{key}"] = value if _is_scalar(value) else _json_text(value)
            rows.append(row)
        broken += [{"model": name, "problem": message} for name, message in sorted(problems.items())]
        columns = ["model", *metric_names, "has_test", "created", "updated", "problem"]
        table = pd.DataFrame(rows, columns=None if rows else columns)
        if rows:
            table = table.sort_values(main.name, ascending=not main.greater_is_better, kind="stable")
        if broken:
            table = pd.concat([table, pd.DataFrame(broken)], ignore_index=True)
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
        :meth:`export` writes, so ``export`` -> ``import_predictions`` round-trips). Ids are
        read as text (``"007"`` stays ``"007"``, ``"NA"`` is an id, not a missing value) and
        matched to the store's ids as text.
        """
        from ensemble_kit.store._tables import read_prediction_tables

        self._check_name(name)
        oof, test_values = read_prediction_tables(self, name, table_or_path, test=test, id_col=id_col)
        return self.put(name, oof, test_values, kind=kind, meta=meta, overwrite=overwrite)

    def export(self, name: str, path: str | os.PathLike[str], *, kind: Literal["logits", "probs"] = "probs") -> Path:
        """Write an entry as one CSV or Parquet table (by the file's extension).

        Columns: ``id``, ``split`` (``"oof"`` or ``"test"``), ``fold`` (the sample's fold for
        OOF rows, -1 for test rows), then one column per class. Test rows hold the
        fold-averaged logits. ``kind="probs"`` (default) writes softmax probabilities,
        ``kind="logits"`` the stored logits. Classes named ``id``, ``split`` or ``fold`` are
        refused (their columns would collide).
        """
        from ensemble_kit.store._tables import write_prediction_table

        return write_prediction_table(self, name, Path(path), kind=kind)

    # ------------------------------------------------------------------ verification
    def verify(self) -> None:
        """Re-check every checksum and invariant of the store.

        Checks the ids/labels/folds, every entry manifest against its schema, that each
        referenced array exists, has the recorded checksum, shape and dtype, holds only finite
        values, and that complete entries cover every training sample exactly once.

        Raises
        ------
        StoreCorruptedError
            Listing every problem found (entry, file and what is wrong).
        """
        from ensemble_kit.store._verify import verify_store

        verify_store(self)

    # ------------------------------------------------------------------ internals
    def _scan(self) -> tuple[dict[str, EntryManifest], dict[str, str]]:
        """Every published entry's manifest, and what is wrong with those that cannot be read."""
        healthy: dict[str, EntryManifest] = {}
        problems: dict[str, str] = {}
        entries_dir = safe_dir(self._path, ENTRIES_DIR)
        for child in entries_dir.iterdir():
            name = child.name
            try:
                check_name(name)
            except ValidationError:
                problems[name] = f"{str(child)!r} is not an entry (its name is not a valid entry name)"
                continue
            try:
                manifest = self._read_manifest(name)
            except StoreCorruptedError as exc:
                problems[name] = str(exc)
                continue
            if manifest is not None:
                healthy[name] = manifest
        return healthy, problems

    def _entries(self) -> dict[str, EntryManifest]:
        healthy, problems = self._scan()
        if problems:
            logger.warning("store %s: %d damaged entr%s left out: %s (see LogitStore.problems())", self._path,
                           len(problems), "y" if len(problems) == 1 else "ies", sorted(problems))
        return healthy

    def _entry_dir(self, name: str, *, create: bool = False) -> Path:
        return safe_dir(self._path, ENTRIES_DIR, name, create=create)

    def _lock(self, name: str) -> FileLock:
        path = safe_dir(self._path, LOCKS_DIR, create=True) / f"{name}.lock"
        check_lock_file(path)
        return FileLock(str(path))

    def _read_manifest(self, name: str) -> EntryManifest | None:
        """The validated manifest of ``name``; ``None`` when nothing was ever published under it."""
        path = self._entry_dir(name) / ENTRY_MANIFEST
        try:
            document = read_json(path)
        except FileNotFoundError:
            return None
        return read_entry_manifest(document, path, name=name, layout=self._layout,
                                   schema_version=self._manifest.schema_version)

    def _existing_for_write(self, name: str, *, overwrite: bool) -> EntryManifest | None:
        """The entry's manifest before a write; a damaged one may only be replaced whole."""
        collision = case_collision(name, (p.name for p in safe_dir(self._path, ENTRIES_DIR).iterdir()))
        if collision is not None:
            raise ValidationError(
                f"Entry name {name!r} differs only in case from the stored entry {collision!r}; on case-insensitive "
                "file systems (macOS, Windows) both would share one folder. Choose another name."
            )
        try:
            return self._read_manifest(name)
        except UnsafePathError:
            raise
        except StoreCorruptedError as exc:
            if overwrite:
                logger.warning("entry %r is damaged (%s): replacing it as asked", name, exc)
                return None
            raise StoreCorruptedError(
                f"Entry {name!r} is damaged and cannot be extended: {exc} Replace it whole with put(..., "
                "overwrite=True), or remove() it.", path=exc.path, field=exc.field) from exc

    def _commit(self, name: str, manifest: EntryManifest) -> None:
        """Publish ``manifest`` (one atomic rename), then delete files it no longer references."""
        entry_dir = self._entry_dir(name)
        write_json(entry_dir / ENTRY_MANIFEST, manifest.to_json())
        referenced = {ENTRY_MANIFEST} | {r.file for r in manifest.records()}
        for file in entry_dir.iterdir():
            # Safe under the entry lock: every writer of this entry holds it while writing,
            # so an unreferenced file is an old version or a killed writer's leftover. The
            # folder itself is no link (checked by safe_dir), and unlink() removes a link
            # planted inside it, never its target.
            if file.name not in referenced and not file.is_dir():
                file.unlink(missing_ok=True)

    def _write_array(self, entry_dir: Path, stem: str, array: np.ndarray) -> ArrayRecord:
        file = f"{stem}-{uuid.uuid4().hex[:12]}.npy"
        digest = write_npy(entry_dir / file, array)
        return ArrayRecord(file=file, checksum=digest, shape=tuple(array.shape), dtype=array.dtype.name)

    def _load(self, name: str, record: ArrayRecord, *, mmap: bool, verify: bool | None = None) -> np.ndarray:
        """One array of an entry. Hashed when small (or ``verify=True``); always size-checked."""
        file = self._entry_dir(name) / record.file
        nbytes = int(np.prod(record.shape, dtype=np.int64)) * np.dtype(record.dtype).itemsize
        if verify is None:
            verify = not mmap and nbytes <= HASH_ON_READ_BYTES
        try:
            array = load_array(file, checksum=record.checksum if verify else None, mmap=mmap and not verify)
        except UnsafePathError:
            raise
        except StoreCorruptedError as exc:
            raise StoreCorruptedError(f"Entry {name!r}: {exc} Re-write the entry (overwrite=True) or remove it.",
                                      path=file) from exc
        if tuple(array.shape) != record.shape or array.dtype.name != record.dtype:
            raise StoreCorruptedError(
                f"Entry {name!r}: {file.name} has shape {array.shape} ({array.dtype}), manifest says "
                f"{list(record.shape)} ({record.dtype}).", path=file)
        return array

    def _read_complete(self, name: str, part: str, *, mmap: bool) -> np.ndarray:
        self._check_name(name)
        for attempt in range(_READ_ATTEMPTS):
            manifest = self._read_manifest(name)
            if manifest is None:
                raise EntryNotFoundError(self._not_found_message(name))
            if not manifest.complete:
                missing = self._info(manifest).missing_folds
                raise EntryIncompleteError(
                    f"Entry {name!r} is incomplete: folds {list(missing)} are missing. Write them "
                    "with put_fold(), or remove the entry."
                )
            record = manifest.oof if part == "oof" else manifest.test
            if record is None:
                raise EntryNotFoundError(f"Entry {name!r} has no test predictions.")
            try:
                array = self._load(name, record, mmap=mmap)
                break
            except FileNotFoundError:  # an overwrite replaced the file between manifest and open
                time.sleep(0.002 * attempt)
        else:
            raise StoreBusyError(f"Entry {name!r} was rewritten {_READ_ATTEMPTS} times while being read; try again "
                                 "when its writer is done.")
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

    def _patch_complete(self, manifest: EntryManifest, fold: int, oof: np.ndarray,
                        test: np.ndarray | None) -> EntryManifest:
        name = manifest.name
        entry_dir = self._entry_dir(name)
        assert manifest.oof is not None  # a complete manifest always has one (schema-checked)
        full_oof = self._load(name, manifest.oof, mmap=False, verify=True)
        full_oof[self._fold_rows[fold]] = oof
        new_test = manifest.test
        if test is not None and manifest.test is not None:
            if manifest.test.shape[0] != self._n_folds:
                raise ShapeMismatchError(
                    f"Entry {name!r} was written with a single test prediction; a per-fold "
                    "overwrite cannot replace one fold of it. Re-write the entry with put()."
                )
            full_test = self._load(name, manifest.test, mmap=False, verify=True)
            full_test[fold] = test
            new_test = self._write_array(entry_dir, "test", full_test)
        return replace(manifest, oof=self._write_array(entry_dir, "oof", full_oof), test=new_test)

    def _consolidate(self, manifest: EntryManifest) -> EntryManifest:
        """Merge per-fold arrays into one OOF and one test array, so reads are single files.

        Every piece is hashed first: a damaged fold file is refused, never laundered into a
        consolidated array with a fresh checksum.
        """
        name = manifest.name
        entry_dir = self._entry_dir(name)
        oof = np.empty((len(self._train_ids), self.n_classes), dtype=self._dtype)
        tests = []
        for k in range(self._n_folds):
            fold = manifest.folds[k]
            oof[self._fold_rows[k]] = self._load(name, fold.oof, mmap=False, verify=True)
            if fold.test is not None:
                tests.append(self._load(name, fold.test, mmap=False, verify=True))
        return replace(manifest, complete=True, folds={},
                       oof=self._write_array(entry_dir, "oof", oof),
                       test=self._write_array(entry_dir, "test", np.stack(tests)) if tests else None)

    def _info(self, manifest: EntryManifest) -> EntryInfo:
        if manifest.complete:
            test_folds = manifest.test.shape[0] if manifest.test else 0
        else:
            test_folds = self._n_folds if self._test_ids is not None else 0
        return EntryInfo(
            name=manifest.name, complete=manifest.complete, folds_present=tuple(manifest.folds_present),
            n_folds=self._n_folds, dtype=manifest.dtype, kind_written=manifest.kind_written,
            has_test=self._test_ids is not None, test_folds=test_folds, created=manifest.created,
            updated=manifest.updated, meta=dict(manifest.meta), fold_meta=dict(manifest.fold_meta),
        )

    def _check_name(self, name: object) -> None:
        check_name(name, what="entry name")

    def _check_names(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        if not names:
            raise ValidationError("names must list at least one entry.")
        index = pd.Index(names)
        if index.has_duplicates:
            raise ValidationError(f"names lists entries more than once: {sorted(set(index[index.duplicated()]))}.")
        return names

    def _check_fold(self, fold: object, *, name: str | None = None) -> None:
        if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < self._n_folds:
            prefix = f"Entry {name!r}: " if name else ""
            raise FoldMismatchError(
                f"{prefix}fold must be an integer in 0..{self._n_folds - 1} (the store has "
                f"{self._n_folds} folds); got {fold!r}."
            )

    def _fold_order(self, ids: ArrayLike, fold: int, *, name: str, n_rows: int) -> np.ndarray:
        """Permutation putting rows labelled ``ids`` into the store's order for ``fold`` (hash joins: linear)."""
        given = np.asarray(ids)
        if given.ndim != 1 or len(given) != n_rows:
            raise FoldMismatchError(f"Entry {name!r} fold {fold}: {len(given)} ids for {n_rows} oof rows.")
        match = match_ids(given, self._train_ids[self._fold_rows[fold]])
        if match.duplicated:
            raise IdMismatchError(f"Entry {name!r} fold {fold}: duplicated ids {match.duplicated}.")
        if not match.exact:
            raise FoldMismatchError(
                f"Entry {name!r}: the rows given are not fold {fold}'s samples: "
                f"{match.n_missing} of its ids missing (e.g. {match.missing}), {match.n_extra} ids from other "
                f"folds or unknown (e.g. {match.extra})."
            )
        return match.position

    def _not_found_message(self, name: str) -> str:
        known = sorted(self._scan()[0])
        return f"No entry {name!r} in store {str(self._path)!r}. Stored entries: {known or 'none'}."


# ---------------------------------------------------------------------- helpers
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _check_meta(meta: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValidationError(f"Entry {name!r}: meta must be a mapping; got {type(meta).__name__}.")
    try:
        return to_json_safe(dict(meta))
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
    index = pd.Index(normalized)
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()
        raise IdMismatchError(f"{what} must be unique; duplicated ids: {sorted(dup[:10].tolist())} ({len(dup)} in all).")
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
