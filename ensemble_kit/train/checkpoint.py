"""Training checkpoints that are safe to read from an untrusted folder: safetensors + JSON, never pickle.

A checkpoint is a folder ``epoch_NNNN/`` holding ``tensors.safetensors`` (every tensor and
array: weights, optimizer moments, RNG states) and ``state.json`` (everything else: epoch,
scheduler and optimizer hyper-parameters, Python/numpy RNG counters), where each tensor is
referenced by key, and the tensors file's checksum. It is written to a staging folder and
published with one rename, so a killed writer leaves the previous checkpoint intact. Reading one parses JSON and a safetensors
header (a bounds-checked format with no code in it); any fault is a :class:`CheckpointError`
naming the file.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ensemble_kit.errors import CheckpointError, StoreCorruptedError, UnsafePathError
from ensemble_kit.store._artifacts import ArtifactKind, publish
from ensemble_kit.store._files import (
    CHECKSUM_ALGORITHM,
    _HASHERS,
    check_checksum_tag,
    open_regular,
    read_json,
    write_bytes,
    write_text,
)
from ensemble_kit.store._paths import safe_dir

__all__ = ["CHECKPOINT_FORMAT", "list_checkpoints", "load_checkpoint_state", "prune_checkpoints",
           "save_checkpoint_state"]

CHECKPOINT_FORMAT = "ensemble_kit.checkpoint/1"
PREFIX = "epoch_"
_NAME_RE = re.compile(rf"{PREFIX}\d{{4,}}")
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
# Files of the pickle-based format written before checkpoints became safetensors + JSON.
_LEGACY_GLOB = f"{PREFIX}*.pt"


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able form of a nested state; tensors and arrays go to ``tensors`` by key."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        key = f"t{len(tensors)}"
        # safetensors has no unsigned 32/64-bit torch dtype on every version: keep them as int64
        array = value.astype(np.int64) if value.dtype.kind == "u" and value.dtype.itemsize >= 4 else value
        tensors[key] = torch.from_numpy(np.ascontiguousarray(array).copy())
        return {"__ndarray__": key, "dtype": value.dtype.str}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    raise TypeError(f"cannot checkpoint a value of type {type(value).__name__}")


def _decode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, where) for v in value]
    if not isinstance(value, dict):
        return value
    tag = next((k for k in value if k.startswith("__")), None)
    if tag is None:
        return {k: _decode(v, tensors, where) for k, v in value.items()}
    try:
        if tag == "__tensor__":
            return tensors[value["__tensor__"]]
        if tag == "__ndarray__":
            return tensors[value["__ndarray__"]].numpy().astype(np.dtype(value["dtype"]))
        if tag == "__float__":
            return {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}[value["__float__"]]
        if tag == "__tuple__":
            return tuple(_decode(v, tensors, where) for v in value["__tuple__"])
        if tag == "__items__":
            return {_hashable(_decode(k, tensors, where)): _decode(v, tensors, where) for k, v in value["__items__"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"Checkpoint {where!r} is damaged: a {tag} value is malformed ({exc!r}).") from exc
    raise CheckpointError(f"Checkpoint {where!r} is damaged: unknown value tag {tag!r}.")


def _hashable(key: Any) -> Any:
    if isinstance(key, (str, int, float, bool, tuple)) or key is None:
        return key
    raise TypeError(f"dict key of type {type(key).__name__}")


def save_checkpoint_state(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the checkpoint folder ``folder`` (replacing an older checkpoint of that name)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    document = {"format": CHECKPOINT_FORMAT, "state": _encode(state, tensors)}
    payload = save(tensors)
    document["tensors_checksum"] = f"{CHECKSUM_ALGORITHM}:{_HASHERS[CHECKSUM_ALGORITHM](payload).hexdigest()}"
    with publish(folder, ArtifactKind(STATE_FILE, CHECKPOINT_FORMAT, entries=frozenset({TENSORS_FILE}))) as staging:
        write_bytes(staging / TENSORS_FILE, payload)
        write_text(staging / STATE_FILE, json.dumps(document, allow_nan=False))
    return folder


def load_checkpoint_state(folder: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint folder written by :func:`save_checkpoint_state`; never runs code from it."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    where = str(folder)
    try:
        safe_dir(folder.parent, folder.name)
        document = read_json(folder / STATE_FILE)
        with open_regular(folder / TENSORS_FILE) as fh:
            payload = fh.read()
        _check_tensors(payload, document.get("tensors_checksum"), where)
        tensors = load(payload)
    except UnsafePathError as exc:
        raise CheckpointError(f"Checkpoint {where!r} is not a plain folder of plain files: {exc}") from exc
    except FileNotFoundError as exc:
        raise CheckpointError(f"Checkpoint {where!r} is incomplete: {exc.filename} is missing.") from exc
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"Checkpoint {where!r} cannot be read ({type(exc).__name__}: {exc}).") from exc
    except StoreCorruptedError as exc:  # state.json is not UTF-8 JSON, too large, too deep...
        raise CheckpointError(f"Checkpoint {where!r} cannot be read: {exc}") from exc
    if document.get("format") != CHECKPOINT_FORMAT or "state" not in document:
        raise CheckpointError(f"Checkpoint {where!r} is not an ensemble_kit checkpoint (format "
                              f"{document.get('format')!r}, expected {CHECKPOINT_FORMAT!r}).")
    state = _decode(document["state"], {k: v.to(map_location) for k, v in tensors.items()}, where)
    if not isinstance(state, dict):
        raise CheckpointError(f"Checkpoint {where!r} is damaged: its state is not a mapping.")
    return state


def _check_tensors(payload: bytes, checksum: Any, where: str) -> None:
    """The tensors file must match the checksum ``state.json`` records (checkpoints written before
    checksums were recorded have none and are read as they are)."""
    if checksum is None:
        return
    try:
        algorithm, _, expected = check_checksum_tag(checksum, field="tensors_checksum").partition(":")
    except StoreCorruptedError as exc:
        raise CheckpointError(f"Checkpoint {where!r}: {exc}") from exc
    if _HASHERS[algorithm](payload).hexdigest() != expected:
        raise CheckpointError(f"Checkpoint {where!r}: {TENSORS_FILE} does not match its checksum in {STATE_FILE} "
                              "(modified or corrupted). Delete the checkpoint to train the fold from the one before.")


def list_checkpoints(fold_dir: Path) -> list[Path]:
    """Checkpoint folders of one fold, oldest first.

    Raises :class:`CheckpointError` when the folder holds pickle checkpoints (``epoch_*.pt``,
    the format before this one): they are never loaded, since unpickling runs code.
    """
    legacy = sorted(fold_dir.glob(_LEGACY_GLOB))
    if legacy:
        raise CheckpointError(
            f"{str(fold_dir)!r} holds pickle checkpoints ({legacy[0].name}...), which ensemble_kit never loads (a "
            "crafted pickle runs code). Delete them to train this fold afresh."
        )
    return sorted(p for p in fold_dir.iterdir() if _NAME_RE.fullmatch(p.name)) if fold_dir.is_dir() else []


def prune_checkpoints(fold_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (``keep=0``: all of them)."""
    found = list_checkpoints(fold_dir)
    for old in found[: max(len(found) - keep, 0)]:
        _remove(old)


def _remove(path: Path) -> None:
    """Delete a checkpoint folder or file, never following a link."""
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
