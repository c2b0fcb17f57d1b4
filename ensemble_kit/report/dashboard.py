"""Open a store's Optuna studies in optuna-dashboard (optional extra ``dashboard``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ensemble_kit._optional import import_optional
from ensemble_kit.ensemble._claims import masked_url
from ensemble_kit.errors import StoreError
from ensemble_kit.store import LogitStore
from ensemble_kit.store._workspace import STUDY_DB

logger = logging.getLogger(__name__)

def launch_dashboard(store: LogitStore | str | Path, *, host: str = "127.0.0.1", port: int = 8080,
                     storage: str | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve optuna-dashboard on the store's studies (blocks until interrupted).

    ``storage`` overrides the store's own study database (e.g. a PostgreSQL URL). The server is
    bound before ``on_ready(url)`` is called, so a URL printed from it is already being served.

    Raises
    ------
    MissingDependencyError
        optuna-dashboard is not installed (``pip install "ensemble_kit[dashboard]"``).
    StoreError
        The store has no studies yet (fit a Stacker from it first).
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    opened = store if isinstance(store, LogitStore) else LogitStore(store)
    if storage is None and not opened.workspace.study_db().is_file():
        raise StoreError(
            f"Store {str(opened.path)!r} has no Optuna studies yet ({STUDY_DB} is missing). Fit a stack first: "
            f"ensemble-kit stack {opened.path}"
        )
    dashboard = import_optional("optuna_dashboard", feature="The Optuna dashboard")
    url = os.path.expandvars(storage) if storage else opened.workspace.study_storage()
    app = dashboard.wsgi(url)

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # one line per request is noise
            logger.debug(format, *args)

    server = make_server(host, port, app, handler_class=_Quiet)  # listening from here on
    address = f"http://{host}:{server.server_port}"
    logger.info("optuna-dashboard on %s at %s", masked_url(url), address)
    if on_ready is not None:
        on_ready(address)
    try:
        server.serve_forever()
    finally:
        server.server_close()
