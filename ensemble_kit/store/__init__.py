"""The logit store: out-of-fold and test logits of every model, aligned to one fold split."""

from ensemble_kit.store._folds import check_folds, make_folds
from ensemble_kit.store._manifest import SCHEMA_VERSION
from ensemble_kit.store._paths import check_name
from ensemble_kit.store._store import EntryInfo, LogitStore
from ensemble_kit.store._workspace import Workspace

__all__ = ["EntryInfo", "LogitStore", "SCHEMA_VERSION", "Workspace", "check_folds", "check_name", "make_folds"]
