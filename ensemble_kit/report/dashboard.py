"""Open a store's Optuna studies in optuna-dashboard (optional extra ``dashboard``)."""

from __future__ import annotations

import logging
from pathlib import Path

from ensemble_kit._optional import import_optional
from ensemble_kit.errors import StoreError
from ensemble_kit.store import LogitStore
from ensemble_kit.store._workspace import STUDY_DB

logger = logging.getLogger(__name__)

def launch_dashboard(store: LogitStore | str | Path, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard on the store's studies (blocks until interrupted).

    Raises
    ------
    MissingDependencyError
        optuna-dashboard is not installed (``pip install "ensemble_kit[dashboard]"``).
    StoreError
        The store has no studies yet (fit a Stacker from it first).
    """
    opened = store if isinstance(store, LogitStore) else LogitStore(store)
    if not opened.workspace.study_db().is_file():
        raise StoreError(
            f"Store {str(opened.path)!r} has no Optuna studies yet ({STUDY_DB} is missing). Fit a stack first: "
            f"ensemble-kit stack {opened.path}"
        )
    dashboard = import_optional("optuna_dashboard", feature="The Optuna dashboard")
    url = opened.workspace.study_storage()
    logger.info("optuna-dashboard on %s at http://%s:%d", url, host, port)
    dashboard.run_server(url, host=host, port=port)
