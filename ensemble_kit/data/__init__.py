"""Data sources, fold assignment and transforms."""

from ensemble_kit.data.folds import check_folds, make_folds

__all__ = ["check_folds", "make_folds"]
