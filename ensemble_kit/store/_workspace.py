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
``optuna.db``            the Optuna studies of every stack fitted from the store
======================  ==================================================================
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ensemble_kit.errors import StoreBusyError, UnsafePathError
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
_STUDIES_LOCK = ".studies.lock"
# A second `ensemble-kit stack` on one store waits this long for the first one's studies.
STUDY_LOCK_TIMEOUT_S = 6 * 3600


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

    @contextmanager
    def studies_lock(self, *, timeout: float = STUDY_LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the store's study lock: one stack at a time tunes the store's own studies.

        SQLite lets two processes race on one study (one of them dies in Optuna, or a study ends
        with more trials than asked); holding this lock, the second process waits and then
        reuses the finished studies, so it reproduces the first one's result.
        """
        lock_path = safe_dir(self.root, LOCKS_DIR, create=True) / _STUDIES_LOCK
        check_lock_file(lock_path)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            logger.warning("another stack is tuning the studies of %s: waiting for it (up to %.0f s)", self.root, timeout)
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise StoreBusyError(
                    f"Store {str(self.root)!r} is busy: another process has been tuning its Optuna studies for more "
                    f"than {timeout:.0f} s. Wait for it to finish, or give this stack its own storage=... ."
                ) from None
        try:
            yield
        finally:
            lock.release()

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


