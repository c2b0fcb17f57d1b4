"""Fitted stacks saved inside the store (``STORE/stacks/<name>/``), for reports and submissions.

Each is one stack artifact (:func:`~ensemble_kit.ensemble._persist.save_stack`,
``docs/stack-format.md``): the fitted Stacker, its typed summary and honest report, its OOF and
test probabilities and decisions, and its provenance (recipe, classes, settings, held-out test
scores), every file checksummed, published with one rename. Stacks saved in the layout before
format 2 (``summary.json``, ``report.csv``, ``.npy`` files and ``stacker/``) still load.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble_kit.ensemble import StackArtifact, StackInfo
from ensemble_kit.ensemble._claims import masked_url, open_storage
from ensemble_kit.ensemble._persist import STACK_KIND, is_stack, read_stack, save_stack
from ensemble_kit.ensemble._recipes import RECIPES
from ensemble_kit.ensemble.stacker import Stacker
from ensemble_kit.errors import ArtifactError, StoreCorruptedError, StoreError, ValidationError
from ensemble_kit.metrics import list_metrics, scores
from ensemble_kit.project.config import StackConfig
from ensemble_kit.store import LogitStore, check_name
from ensemble_kit.store._artifacts import check_destination
from ensemble_kit.store._files import load_array
from ensemble_kit.store._paths import case_collision

logger = logging.getLogger(__name__)

TEST_LABELS = "test_labels.npy"

#: A stack saved in the store: the stack artifact (:class:`~ensemble_kit.ensemble.StackArtifact`).
StackResult = StackArtifact


def fit_stack(store: LogitStore, config: StackConfig) -> StackArtifact:
    """Fit :class:`~ensemble_kit.Stacker` on the store as ``config`` says, save it, return it.

    The stack is saved as one artifact at ``STORE/stacks/<name>/`` (``docs/stack-format.md``):
    the Stacker, its summary and report, its OOF and test predictions, and where it came from.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from ensemble_kit import LogitStore
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(60) % 3
    >>> store = LogitStore.create(tempfile.mkdtemp() + "/s", np.arange(60), y, [0, 1, 2], n_folds=3,
    ...                           test_ids=np.arange(10))
    >>> for i in range(2):
    ...     _ = store.put(f"m{i}", np.eye(3)[y] * (i + 1) + rng.normal(size=(60, 3)), rng.normal(size=(10, 3)))
    >>> result = fit_stack(store, StackConfig(recipe="hill_climb"))
    >>> result.name, result.test_proba.shape, sorted(p.name for p in result.path.glob("*.json"))
    ('hill_climb', (10, 3), ['stack.json'])
    """
    final = _check_new_stack(store, config.result_name)
    if config.storage is not None:  # a bad URL is named now, not after minutes of fitting (or never)
        open_storage(config.storage)
    stacker = Stacker.from_recipe(config.recipe, metric=config.metric, n_trials=config.n_trials, seed=config.seed,
                                  storage=config.storage)
    stacker.fit(store, models=list(config.models) if config.models else None)
    test_proba = stacker.predict_proba(store) if store.test_ids is not None else None
    y_test = held_out_labels(store)
    held_out = None if y_test is None or test_proba is None else \
        scores(y_test, test_proba, kind="probs", labels=stacker.decide(test_proba))
    info = StackInfo(name=config.result_name, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     recipe=config.recipe, description=RECIPES.summary(config.recipe), classes=tuple(store.classes),
                     settings=_plain_config(config), held_out_test=held_out)
    save_stack(stacker, final, test_proba=test_proba, info=info)
    logger.info("saved stack %r to %s", config.result_name, final)
    _label_studies(stacker, config.result_name)
    return load_stack(store, config.result_name)


def _plain_config(config: StackConfig) -> dict[str, Any]:
    """The stack's settings as JSON. A storage URL is reduced to its scheme: a saved stack travels
    (bundles, shared stores) and must hold no password, user, host or path of this machine."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    if config.storage is not None:
        plain["storage"] = masked_url(config.storage).split("://", 1)[0] + "://..."
    return plain


def _label_studies(stacker: Stacker, name: str) -> None:
    """Name the saved stack in each of its studies (optuna-dashboard shows user attributes)."""
    import optuna

    for study_name in stacker.study_names_:
        optuna.load_study(study_name=study_name, storage=open_storage(stacker.storage_)).set_user_attr("stack", name)


def _check_new_stack(store: LogitStore, name: str) -> Path:
    """The folder a stack ``name`` will be saved in, refused before anything is fitted if unusable."""
    final = store.workspace.stack_dir(name)
    root = store.workspace.stacks_root()
    if root.is_dir():
        other = case_collision(name, (p.name for p in root.iterdir() if not p.name.startswith(".")))
        if other is not None:
            raise ValidationError(f"Stack name {name!r} differs only in case from the saved stack {other!r}; on "
                                  "case-insensitive file systems (macOS, Windows) both would share one folder.")
    return check_destination(final, STACK_KIND)  # e.g. notes in stacks/<name>/: refused before minutes of fitting


def list_stacks(store: LogitStore) -> list[str]:
    """Names of the stacks saved in the store, oldest first.

    A damaged stack (a missing or mistyped field, a file that does not match its checksum) is
    left out with a warning naming it, like a damaged entry: the others stay usable.
    """
    return [artifact.name for artifact in _saved_stacks(store)]


def _saved_stacks(store: LogitStore) -> list[StackArtifact]:
    root = store.workspace.stacks_root()
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.name.startswith("."):
            continue
        try:
            check_name(child.name, what="stack name")
            folder = store.workspace.stack_dir(child.name)
            if not is_stack(folder):
                continue
            found.append(read_stack(folder))
        except (ArtifactError, StoreCorruptedError, ValidationError) as exc:
            logger.warning("skipping saved stack %r: %s", child.name, exc)
    return sorted(found, key=lambda a: (a.info.created if a.info is not None else "", a.path.name))


def load_stack(store: LogitStore, name: str | None = None) -> StackArtifact:
    """A saved stack (default: the most recently fitted one that is not damaged).

    Raises
    ------
    StoreError
        No stack of that name (or none at all) is saved.
    ArtifactError
        The named stack is damaged (the message says which file or field).
    """
    if name is not None:
        check_name(name, what="stack name")
        folder = store.workspace.stack_dir(name)
        if is_stack(folder):
            return read_stack(folder)
    available = _saved_stacks(store)
    if not available:
        raise StoreError(f"Store {str(store.path)!r} has no fitted stack yet: run `ensemble-kit stack "
                         f"{store.path}` first.")
    if name is None:
        return available[-1]
    raise StoreError(f"Store {str(store.path)!r} has no stack {name!r}; saved stacks: "
                     f"{[a.name for a in available]}.")


def held_out_labels(store: LogitStore) -> np.ndarray | None:
    """Test labels saved by :func:`open_project_store` (``None`` when the test set is unlabelled)."""
    path = store.workspace.project_dir() / TEST_LABELS
    if not os.path.lexists(path):
        return None
    labels = load_array(path)
    if labels.shape != (0 if store.test_ids is None else len(store.test_ids),) or labels.dtype.kind != "i" \
            or (labels.size and (labels.min() < 0 or labels.max() >= store.n_classes)):
        raise StoreCorruptedError(f"{str(path)!r} does not hold one class index per test id of the store.", path=path)
    return labels


def results_table(store: LogitStore, stack: StackResult | None = None) -> pd.DataFrame:
    """Every base model and every stack step with honest OOF scores, plus held-out test scores.

    Without a stack, the base models' OOF scores. Columns ``test_<metric>`` appear when the
    project kept the test labels (:func:`~ensemble_kit.project.held_out_labels`); the last row
    then scores the stack's submitted test predictions (decided labels included).
    """
    metrics = list_metrics()
    if stack is not None:
        columns = ["step", "kind", *(["kept"] if "kept" in stack.report.columns else []),
                   *[m for m in metrics if m in stack.report.columns], "fit_seconds"]
        table = stack.report[columns].copy()
        models = stack.models
    else:
        board = store.leaderboard("log_loss")
        table = board[["model", *metrics]].rename(columns={"model": "step"})
        table.insert(1, "kind", "base model")
        models = list(board["model"])
    y_test = held_out_labels(store)
    if y_test is None or store.test_ids is None:
        return table
    test_scores = {name: scores(y_test, store.test(name), kind="logits") for name in models}
    # only base models have test scores of their own: key by (kind, name), never by display name alone
    is_model = table["kind"] == "base model"
    for m in metrics:
        table[f"test_{m}"] = [test_scores[step][m] if model and step in test_scores else np.nan
                              for step, model in zip(table["step"], is_model)]
    if stack is not None and stack.info is not None and stack.info.held_out_test is not None:
        final = {"step": "final (as submitted)", "kind": "held-out test",
                 **{f"test_{m}": v for m, v in stack.info.held_out_test.items()}}
        table = pd.concat([table, pd.DataFrame([final])], ignore_index=True)
    return table
