"""The logit store: out-of-fold and test logits of every model, aligned to one fold split."""

from ensemble_kit.store._store import SCHEMA_VERSION, EntryInfo, LogitStore

__all__ = ["EntryInfo", "LogitStore", "SCHEMA_VERSION"]
