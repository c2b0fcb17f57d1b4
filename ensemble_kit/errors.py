"""Exceptions raised by ensemble_kit.

Every error the library raises on purpose derives from :class:`EnsembleKitError`, so
``except EnsembleKitError`` catches all of them. Errors about bad values also derive from
:class:`ValueError` so code written against scikit-learn conventions keeps working.
Messages say what was expected, what was received and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "EnsembleKitError",
    "ValidationError",
    "MissingDependencyError",
    "StoreError",
    "NotAStoreError",
    "SchemaVersionError",
    "StoreExistsError",
    "EntryExistsError",
    "EntryNotFoundError",
    "EntryIncompleteError",
    "ShapeMismatchError",
    "InvalidValuesError",
    "FoldMismatchError",
    "IdMismatchError",
    "StoreCorruptedError",
    "UnsafePathError",
    "StoreBusyError",
    "CheckpointError",
    "ImageDecodeError",
    "ArtifactError",
    "DestinationError",
    "StudyStorageError",
    "FoldTaskError",
]


class EnsembleKitError(Exception):
    """Base class of every error raised by ensemble_kit."""


class ValidationError(EnsembleKitError, ValueError):
    """An argument has the wrong type, shape or value."""


class MissingDependencyError(EnsembleKitError, ImportError):
    """An optional dependency is needed for the requested feature but is not installed."""


class StoreError(EnsembleKitError):
    """Base class of every error raised by :class:`ensemble_kit.LogitStore`."""


class NotAStoreError(StoreError, FileNotFoundError):
    """The path does not hold a logit store."""


class SchemaVersionError(StoreError):
    """The store was written with a schema this version of ensemble_kit cannot read."""


class StoreExistsError(StoreError, FileExistsError):
    """A store (or another non-empty directory) already exists at the target path."""


class EntryExistsError(StoreError):
    """The entry or fold is already stored and ``overwrite=True`` was not given."""


class EntryNotFoundError(StoreError, KeyError):
    """No entry of that name is stored."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class EntryIncompleteError(StoreError):
    """The entry exists but some of its folds are still missing."""


class ShapeMismatchError(StoreError, ValueError):
    """An array does not have the shape the store expects (rows, classes, folds)."""


class InvalidValuesError(StoreError, ValueError):
    """An array holds NaN/inf, or probabilities outside [0, 1] or not summing to 1."""


class FoldMismatchError(StoreError, ValueError):
    """A fold index is out of range or the rows given do not match the fold."""


class IdMismatchError(StoreError, ValueError):
    """Sample ids are missing, unexpected or duplicated, or class columns are missing."""


class StoreCorruptedError(StoreError):
    """A stored file does not match its checksum or violates a store invariant.

    ``path`` is the offending file (or folder) and ``field`` the manifest key at fault, when
    the error is about one (``None`` otherwise).
    """

    def __init__(self, message: str, *, path: object = None, field: str | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.field = field


class UnsafePathError(StoreCorruptedError):
    """A path the store (or a saved stack, checkpoint or bundle) would read, write or delete is
    a symbolic link, not a regular file or folder, or lies outside its root.

    Raised before anything is touched: a folder received from elsewhere can never make
    ensemble_kit follow a link out of it.
    """


class StoreBusyError(StoreError):
    """Another process holds the store (or one of its entries) for longer than the wait allowed,
    or kept rewriting an entry while it was being read."""


class CheckpointError(EnsembleKitError):
    """A training checkpoint or weights file is unreadable, of an unknown format, or does not
    match the model it is loaded into. Checkpoints are never unpickled."""


class ImageDecodeError(ValidationError):
    """An image file is missing, cannot be decoded, or holds a format, mode, bit depth or size
    that cannot be turned into 8-bit RGB faithfully."""


class ArtifactError(EnsembleKitError):
    """A saved stack, exported fold model or inference bundle is damaged, incomplete, of an
    unknown format or version, or does not match what it is loaded into. Nothing in one is ever
    unpickled; the message names the file and what is wrong."""


class DestinationError(ArtifactError, FileExistsError):
    """A save would replace something that is not an artifact of the same kind written by
    ensemble_kit: another non-empty folder, a file, a logit store, the current folder or one of
    its parents. Raised before anything is written or deleted."""


class StudyStorageError(EnsembleKitError):
    """An Optuna storage URL cannot be opened: not a database URL, the server does not answer,
    or Optuna's tables cannot be created. The message shows the URL with its password masked."""


class FoldTaskError(EnsembleKitError):
    """Fold tasks run on an executor failed; the message lists each ``(model, fold)`` and its error.

    ``failures`` holds ``(model, fold, exception)`` triples. Folds that finished are stored, so
    running again trains only what is missing.
    """

    def __init__(self, message: str, *, failures: list[tuple[str, int, BaseException]] | None = None) -> None:
        super().__init__(message)
        self.failures = list(failures or [])
