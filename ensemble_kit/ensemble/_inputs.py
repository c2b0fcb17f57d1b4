"""Turn the containers users pass (dict, array, LogitStore) into one validated logit stack."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ensemble_kit.errors import ValidationError
from ensemble_kit.store import LogitStore

LogitInput = Union[Mapping[str, ArrayLike], ArrayLike, LogitStore]


@dataclass(frozen=True)
class LogitStack:
    """Per-model logits ``(M, n, C)`` with model names, as float32."""

    names: tuple[str, ...]
    logits: NDArray[np.float32]

    @property
    def n_models(self) -> int:
        return self.logits.shape[0]

    @property
    def n_samples(self) -> int:
        return self.logits.shape[1]

    @property
    def n_classes(self) -> int:
        return self.logits.shape[2]


def as_logit_stack(X: LogitInput, *, models: Sequence[str] | None = None, split: str = "oof") -> LogitStack:
    """Validate ``X`` and return its logits stacked as ``(M, n, C)``.

    ``X`` is a mapping name -> ``(n, C)`` logits, an ``(M, n, C)`` array (models named
    ``model_0``...), or a :class:`LogitStore` (its OOF logits for ``split="oof"``, its
    fold-averaged test logits for ``split="test"``; ``models`` selects entries, default all).
    """
    if isinstance(X, LogitStore):
        names = tuple(models) if models is not None else tuple(X.models())
        if not names:
            raise ValidationError(f"Store {str(X.path)!r} has no complete entries to ensemble.")
        logits = X.oof(list(names)) if split == "oof" else X.test(list(names))
        return _checked(names, np.asarray(logits, dtype=np.float32))
    if models is not None:
        raise ValidationError("models=... selects entries of a LogitStore; for dicts and arrays pass only the models to use.")
    if isinstance(X, Mapping):
        if not X:
            raise ValidationError("No models given: the mapping of model name -> logits is empty.")
        names = tuple(str(n) for n in X)
        arrays = [np.asarray(v) for v in X.values()]
        ref_name, ref = names[0], arrays[0]
        for name, array in zip(names, arrays):
            if array.ndim != 2:
                raise ValidationError(f"Model {name!r}: logits must be 2-D (n_samples, n_classes); got shape {array.shape}.")
            if array.shape[0] != ref.shape[0]:
                raise ValidationError(
                    f"Model {name!r} has {array.shape[0]} rows but model {ref_name!r} has {ref.shape[0]}: "
                    "every model must predict the same samples in the same order."
                )
            if array.shape[1] != ref.shape[1]:
                raise ValidationError(
                    f"Model {name!r} has {array.shape[1]} classes but model {ref_name!r} has {ref.shape[1]}."
                )
        return _checked(names, np.stack(arrays).astype(np.float32, copy=False))
    array = np.asarray(X)
    if array.ndim != 3:
        raise ValidationError(
            f"Logits must be a dict name -> (n, C), an (M, n, C) array or a LogitStore; got an array of shape {array.shape}."
        )
    return _checked(tuple(f"model_{i}" for i in range(array.shape[0])), array.astype(np.float32, copy=False))


def _checked(names: tuple[str, ...], logits: np.ndarray) -> LogitStack:
    if logits.dtype == object or not np.issubdtype(logits.dtype, np.floating):
        raise ValidationError(f"Logits must be numeric; got dtype {logits.dtype}.")
    finite = np.isfinite(logits).reshape(len(names), -1).all(axis=1)
    if not finite.all():
        bad = [n for n, ok in zip(names, finite) if not ok]
        raise ValidationError(f"Logits of model(s) {bad} hold NaN or inf.")
    if logits.shape[2] < 2:
        raise ValidationError(f"Need at least 2 classes; got {logits.shape[2]}.")
    return LogitStack(names, logits)


def check_targets(y: ArrayLike, stack: LogitStack) -> NDArray[np.int64]:
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != stack.n_samples:
        raise ValidationError(f"y must be 1-D with one label per sample ({stack.n_samples}); got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValidationError(f"y must hold integer class indices 0..{stack.n_classes - 1}; got dtype {labels.dtype}.")
    bad = (labels < 0) | (labels >= stack.n_classes)
    if bad.any():
        raise ValidationError(
            f"y holds labels outside the {stack.n_classes} classes of the logits: {sorted(set(labels[bad].tolist()))[:10]} "
            f"(first at row {int(np.argmax(bad))})."
        )
    return labels.astype(np.int64)


def check_same_models(fitted: tuple[str, ...], given: tuple[str, ...], n_classes: int, stack: LogitStack) -> None:
    """At predict time the models (and their order) and classes must be those seen in fit."""
    if given != fitted:
        if set(given) == set(fitted):
            raise ValidationError(f"Models are in a different order than in fit: got {list(given)}, fitted on {list(fitted)}.")
        raise ValidationError(
            f"Models differ from those seen in fit: missing {sorted(set(fitted) - set(given))}, "
            f"unexpected {sorted(set(given) - set(fitted))} (fitted on {list(fitted)})."
        )
    if stack.n_classes != n_classes:
        raise ValidationError(f"Logits have {stack.n_classes} classes; the ensemble was fitted on {n_classes}.")


def resolve_fit_inputs(X: LogitInput, y: ArrayLike | None, folds: ArrayLike | None, models: Sequence[str] | None,
                       *, owner: str, min_models: int, seed: int,
                       reason: str = "it combines several models") -> tuple[LogitStack, NDArray[np.int64], NDArray[np.int64]]:
    """Validated ``(logits, y, folds)`` for a fit; a LogitStore supplies its own y and folds."""
    stack = as_logit_stack(X, models=models)
    if isinstance(X, LogitStore):
        y = X.y if y is None else y
        folds = X.folds if folds is None else folds
    if y is None:
        raise ValidationError(f"{owner}.fit: y is required unless the logits come from a LogitStore.")
    if stack.n_models < min_models:
        raise ValidationError(
            f"{owner} needs at least {min_models} models to ensemble ({reason}); got {stack.n_models} "
            f"({list(stack.names)}). Add models, or, for one model, use Stacker.from_recipe('average') (its "
            "fold average with a temperature or tuned class offsets) or Stacker.from_recipe('aoi')."
        )
    yy = check_targets(y, stack)
    if stack.n_samples == 0:
        raise ValidationError(f"{owner}.fit: the logits have no rows; there is nothing to fit.")
    present = np.unique(yy)
    if len(present) < 2:
        raise ValidationError(
            f"{owner}.fit: every row has class {int(present[0])}; an ensemble needs at least 2 classes in y to learn "
            "anything. Check the labels (and the class order) passed with the logits."
        )
    constant = [name for name, logits in zip(stack.names, stack.logits) if not np.ptp(logits, axis=0).any()]
    if len(constant) == stack.n_models:
        raise ValidationError(
            f"{owner}.fit: every model predicts the same logits for every row ({constant}); there is nothing to "
            "stack. Were the predictions written correctly?"
        )
    return stack, yy, default_folds(yy, folds, seed=seed)


def default_folds(y: NDArray[np.int64], folds: ArrayLike | None, *, n_folds: int = 5, seed: int = 0) -> NDArray[np.int64]:
    from ensemble_kit.store import check_folds, make_folds

    if folds is None:
        counts = np.bincount(y)
        n = int(min(n_folds, counts[counts > 0].min())) if counts.any() else n_folds
        if n < 2:
            raise ValidationError("Cannot build folds: some class has a single sample. Pass folds=... explicitly.")
        return make_folds(y, n, seed=seed)
    return check_folds(folds, len(y))

