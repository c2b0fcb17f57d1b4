"""Data sources, fold assignment and transforms."""

from ensemble_kit.store import check_folds, make_folds
from ensemble_kit.data.sources import (
    ArrayImageSource,
    ConcatSource,
    CsvImageSource,
    ImageDecodeError,
    ImageDirSource,
    ImageFolderSource,
    ImagePathSource,
    ImageSource,
    SubsetSource,
)

__all__ = [
    "ArrayImageSource",
    "ConcatSource",
    "CsvImageSource",
    "ImageDecodeError",
    "ImageDirSource",
    "ImageFolderSource",
    "ImagePathSource",
    "ImageSource",
    "SubsetSource",
    "check_folds",
    "make_folds",
]
