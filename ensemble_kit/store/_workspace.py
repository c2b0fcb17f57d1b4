"""The store folder's shared workspace: where each layer above the store keeps its files.

The store itself owns ``ensemble_kit_store.json``, the base arrays, ``entries/`` and ``locks/``.
Everything else in the folder belongs to one of these places, and only this module builds
their paths (every one checked by :func:`~ensemble_kit.store._paths.safe_dir`, so a link
planted in a received store never redirects a write):

======================  ==================================================================
``runs/<model>/``        the trainer's per-fold checkpoints, histories and resolved config
``stacks/<name>/``       saved stacks (``ensemble-kit stack``)
``project/``             the resolved project config and held-out test labels
``report/``              the HTML report and its figures
``optuna.db``            the Optuna studies of every stack fitted from the store (and their
                         claims, ``ensemble_kit/ensemble/_claims.py``; ``optuna.db.lock``)
======================  ==================================================================
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import uuid
from pathlib import Path

from ensemble_kit.errors import UnsafePathError
from ensemble_kit.store._files import check_not_link
from ensemble_kit.store._paths import check_name, safe_dir

__all__ = ["Workspace"]

logger = logging.getLogger(__name__)

RUNS_DIR = "runs"
STACKS_DIR = "stacks"
PROJECT_DIR = "project"
REPORT_DIR = "report"
LOCKS_DIR = "locks"
STUDY_DB = "optuna.db"


class Workspace:
    """Paths of the folders the layers above the store keep inside a store folder.

    Examples
    --------
    >>> import tempfile
    >>> ws = Workspace(tempfile.mkdtemp())
    >>> ws.run_dir("resnet18", create=True).name, ws.stack_dir("full").parent.name
    ('resnet18', 'stacks')
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def run_dir(self, model: str, *, create: bool = False) -> Path:
        """``runs/<model>/``: checkpoints, histories and the resolved training config of one model."""
        return safe_dir(self.root, RUNS_DIR, check_name(model, what="model name"), create=create)

    def fold_dir(self, model: str, fold: int, *, create: bool = False) -> Path:
        return safe_dir(self.run_dir(model, create=create), f"fold{int(fold)}", create=create)

    def stacks_root(self, *, create: bool = False) -> Path:
        return safe_dir(self.root, STACKS_DIR, create=create)

    def stack_dir(self, name: str) -> Path:
        """``stacks/<name>/`` (not created: saved stacks are published by a rename)."""
        return safe_dir(self.root, STACKS_DIR, check_name(name, what="stack name", example="full"))

    def project_dir(self, *, create: bool = False) -> Path:
        return safe_dir(self.root, PROJECT_DIR, create=create)

    def report_dir(self, *, create: bool = False) -> Path:
        return safe_dir(self.root, REPORT_DIR, create=create)

    def study_db(self) -> Path:
        path = self.root / STUDY_DB
        check_not_link(path, what="Optuna study database")
        return path

    def study_storage(self) -> str:
        """The Optuna storage URL of the store's own studies (``sqlite:///STORE/optuna.db``)."""
        return f"sqlite:///{self.study_db().resolve()}"

    def remove_run(self, model: str) -> None:
        """Delete ``runs/<model>/`` (never following a link out of the store)."""
        path = self.run_dir(model)
        if path.exists():
            remove_tree(path, trash_root=self.root)


def remove_tree(path: Path, *, trash_root: Path) -> None:
    """Move ``path`` aside under ``trash_root`` (one atomic rename), then delete it without following links."""
    check_not_link(path, what="Folder to delete")
    trash = trash_root / f".trash-{uuid.uuid4().hex[:8]}"
    os.rename(path, trash)
    # rmtree never follows symlinks inside the tree (it unlinks them), and refuses a link as root
    shutil.rmtree(trash, ignore_errors=True)


def check_lock_file(path: Path) -> None:
    """A lock file is opened for writing: refuse a planted link or non-file in its place."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        raise UnsafePathError(f"Lock file {str(path)!r} is a link or not a plain file; ensemble_kit opens lock files "
                              "for writing and never through links. Delete it (it holds no data).", path=path)


