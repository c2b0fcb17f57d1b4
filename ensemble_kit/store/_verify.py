"""Full verification of a store: every checksum, every manifest against its schema, every invariant."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ensemble_kit.errors import StoreCorruptedError, ValidationError
from ensemble_kit.store._artifacts import verify_artifact
from ensemble_kit.store._files import CHECKSUM_ALGORITHM, _HASHERS, file_matches, load_array, open_regular, read_json
from ensemble_kit.store._manifest import ENTRIES_DIR, ENTRY_MANIFEST, ArrayRecord, EntryManifest
from ensemble_kit.store._paths import check_name, safe_dir
from ensemble_kit.store._workspace import RUNS_DIR, STACKS_DIR

if TYPE_CHECKING:
    from ensemble_kit.store._store import LogitStore

logger = logging.getLogger(__name__)


def verify_store(store: LogitStore) -> None:
    """Raise :class:`StoreCorruptedError` listing every problem of ``store`` (see :meth:`LogitStore.verify`)."""
    problems: list[str] = []
    for key, (file_name, checksum) in store._manifest.arrays.items():
        file = store.path / file_name
        try:
            ok = file_matches(file, checksum)
        except (OSError, StoreCorruptedError):
            ok = False
        if not ok:
            problems.append(f"{key}: {file_name} is missing or does not match its checksum")
    n_checked = 0
    entries_dir = safe_dir(store.path, ENTRIES_DIR)
    for entry_dir in sorted(entries_dir.iterdir()):
        name = entry_dir.name
        try:
            check_name(name)
        except ValidationError:
            problems.append(f"{str(entry_dir)!r} is not an entry (invalid entry name)")
            continue
        if os.path.islink(entry_dir) or not entry_dir.is_dir():
            problems.append(f"entry {name!r}: {str(entry_dir)!r} is a symbolic link or not a folder")
            continue
        if not os.path.lexists(entry_dir / ENTRY_MANIFEST):
            continue  # a first write that was interrupted: nothing was ever published
        try:
            manifest = store._read_manifest(name)
        except StoreCorruptedError as exc:
            problems.append(f"entry {name!r}: unreadable manifest ({exc})")
            continue
        if manifest is not None:
            problems.extend(_verify_entry(store, manifest))
        n_checked += 1
    problems.extend(_verify_workspace(store))
    if problems:
        raise StoreCorruptedError(
            f"Store {str(store.path)!r} failed verification with {len(problems)} problem(s):\n  - "
            + "\n  - ".join(problems)
        )
    logger.info("Verified store %s: %d entries OK", store.path, n_checked)


def _verify_entry(store: LogitStore, manifest: EntryManifest) -> list[str]:
    """Problems of one entry whose manifest passed its schema (sizes already agree with the store)."""
    name = manifest.name
    records: list[tuple[str, ArrayRecord]] = []
    if manifest.complete:
        records.append(("oof", manifest.oof))  # type: ignore[arg-type]
        if manifest.test is not None:
            records.append(("test", manifest.test))
    else:
        for k, fold in sorted(manifest.folds.items()):
            records.append((f"fold {k} oof", fold.oof))
            if fold.test is not None:
                records.append((f"fold {k} test", fold.test))
    problems = []
    entry_dir = store._entry_dir(name)
    for what, record in records:
        file = entry_dir / record.file
        label = f"entry {name!r} {what} ({record.file})"
        if not os.path.lexists(file):
            problems.append(f"{label}: file is missing")
            continue
        try:
            if not file_matches(file, record.checksum):
                problems.append(f"{label}: checksum mismatch (file modified or corrupted)")
                continue
            array = load_array(file, mmap=True)
        except StoreCorruptedError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if tuple(array.shape) != record.shape or array.dtype.name != manifest.dtype:
            problems.append(f"{label}: shape {array.shape} {array.dtype}, expected {record.shape} {manifest.dtype}")
        elif not _all_finite(array):
            problems.append(f"{label}: holds NaN or inf")
    return problems


def _all_finite(array: np.ndarray, chunk_rows: int = 1 << 16) -> bool:
    if array.size == 0:
        return True
    flat = array.reshape(-1, array.shape[-1])
    return all(np.isfinite(flat[i : i + chunk_rows]).all() for i in range(0, len(flat), chunk_rows))


# The manifests of what the layers above the store publish inside it (their formats are theirs;
# verification only needs each file's record and checksum).
_STACK_MANIFEST = "stack.json"
_LEGACY_STACK_SUMMARY = "summary.json"
_FOLD_MODEL_MANIFEST = "model.json"
_CHECKPOINT_STATE = "state.json"
_CHECKPOINT_TENSORS = "tensors.safetensors"


def _verify_workspace(store: LogitStore) -> list[str]:
    """Problems of the saved stacks (``stacks/``) and training runs (``runs/``): every file of every
    stack, exported fold model and checkpoint against its recorded checksum."""
    problems: list[str] = []
    stacks = store.path / STACKS_DIR
    for folder in (stacks, store.path / RUNS_DIR):
        if os.path.islink(folder) or (os.path.lexists(folder) and not os.path.isdir(folder)):
            problems.append(f"{str(folder)!r} is a symbolic link or not a folder; the store's own folders are real")
    if os.path.isdir(stacks) and not os.path.islink(stacks):
        for folder in sorted(p for p in stacks.iterdir() if not p.name.startswith(".")):
            problems.extend(f"stack {folder.name!r}: {p}" for p in _verify_stack(folder))
    runs = store.path / RUNS_DIR
    if os.path.isdir(runs) and not os.path.islink(runs):
        for fold_dir in sorted(runs.glob("*/fold*")):
            if os.path.islink(fold_dir) or not fold_dir.is_dir():
                problems.append(f"{str(fold_dir)!r} is a symbolic link or not a folder")
                continue
            if os.path.lexists(fold_dir / "model"):
                problems.extend(f"run {fold_dir.parent.name}/{fold_dir.name}: {p}"
                                for p in verify_artifact(fold_dir / "model", _FOLD_MODEL_MANIFEST))
            for checkpoint in sorted(fold_dir.glob("epoch_*")):
                problems.extend(f"run {fold_dir.parent.name}/{fold_dir.name}: {p}" for p in _verify_checkpoint(checkpoint))
    return problems


def _verify_stack(folder: Path) -> list[str]:
    if os.path.islink(folder) or not os.path.isdir(folder):
        return [f"{str(folder)!r} is a symbolic link or not a folder"]
    if os.path.lexists(folder / _STACK_MANIFEST):
        problems = verify_artifact(folder, _STACK_MANIFEST)
        if not problems:
            recorded = {r.get("file") for r in read_json(folder / _STACK_MANIFEST)["files"].values()}
            extra = sorted(set(os.listdir(folder)) - recorded - {_STACK_MANIFEST})
            problems += [f"{str(folder / name)!r} is not a file of the stack (not in its manifest)" for name in extra]
        return problems
    if os.path.lexists(folder / _LEGACY_STACK_SUMMARY):
        # saved before stack format 2: the Stacker is checksummed, its predictions were not, so
        # they can only be checked for readable, finite values
        logger.warning("stack %r was saved before stack format 2: its predictions have no checksums, so only their "
                       "values are checked (fit it again with `ensemble-kit stack` to save it with checksums)",
                       folder.name)
        problems = verify_artifact(folder / "stacker", _STACK_MANIFEST)
        for name in ("oof_proba.npy", "oof_labels.npy", "test_proba.npy", "test_labels.npy"):
            if os.path.lexists(folder / name):
                try:
                    if not _all_finite(load_array(folder / name, mmap=True)):
                        problems.append(f"{str(folder / name)!r} holds NaN or inf")
                except StoreCorruptedError as exc:
                    problems.append(str(exc))
        return problems
    return [f"{str(folder)!r} is not a saved stack (no {_STACK_MANIFEST})"]


def _verify_checkpoint(folder: Path) -> list[str]:
    try:
        state = read_json(safe_dir(folder.parent, folder.name) / _CHECKPOINT_STATE)
        checksum = state.get("tensors_checksum")
        if checksum is None:
            return []  # written before checkpoints recorded one
        algorithm, _, expected = str(checksum).partition(":")
        with open_regular(folder / _CHECKPOINT_TENSORS) as fh:
            digest = _HASHERS.get(algorithm, _HASHERS[CHECKSUM_ALGORITHM])(fh.read()).hexdigest()
    except FileNotFoundError as exc:
        return [f"checkpoint {folder.name}: {exc.filename} is missing"]
    except (OSError, StoreCorruptedError) as exc:
        return [f"checkpoint {folder.name}: {exc}"]
    if algorithm not in _HASHERS or digest != expected:
        return [f"checkpoint {folder.name}: {_CHECKPOINT_TENSORS} does not match its checksum"]
    return []
