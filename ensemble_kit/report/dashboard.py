"""Open a store's Optuna studies in optuna-dashboard (optional extra ``dashboard``)."""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ensemble_kit._optional import import_optional
from ensemble_kit.ensemble._claims import check_storage, masked_url
from ensemble_kit.errors import StoreError, ValidationError
from ensemble_kit.store import LogitStore
from ensemble_kit.store._workspace import STUDY_DB

logger = logging.getLogger(__name__)


def launch_dashboard(store: LogitStore | str | Path, *, host: str = "127.0.0.1", port: int = 8080,
                     storage: str | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve optuna-dashboard on the store's studies (blocks until interrupted).

    ``storage`` overrides the store's own study database (e.g. a PostgreSQL URL; ``$VARS`` are
    expanded). It is checked before anything is served, without writing to it: a mistyped URL,
    a server that does not answer or a database without studies is an error, not an empty page.
    The server is bound before ``on_ready(url)`` is called, so a URL printed from it is already
    being served. Ctrl-C (``KeyboardInterrupt``) stops the server and returns normally.

    Raises
    ------
    MissingDependencyError
        optuna-dashboard (or the database's driver) is not installed
        (``pip install "ensemble_kit[dashboard]"``).
    StoreError
        The store has no studies yet (fit a Stacker from it first).
    StudyStorageError
        ``storage`` (or the store's ``optuna.db``) cannot be opened, or holds no Optuna studies;
        the message shows the URL with its password masked.
    ValidationError
        ``port`` is not a port number, or ``host:port`` cannot be listened on (in use, a
        privileged port, an unknown host).
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValidationError(f"port must be an integer from 0 to 65535 (0: any free port); got {port!r}.")
    opened = store if isinstance(store, LogitStore) else LogitStore(store)
    if storage is None and not opened.workspace.study_db().is_file():
        raise StoreError(
            f"Store {str(opened.path)!r} has no Optuna studies yet ({STUDY_DB} is missing). Fit a stack first: "
            f"ensemble-kit stack {opened.path}"
        )
    dashboard = import_optional("optuna_dashboard", feature="The Optuna dashboard")
    url = check_storage(os.path.expandvars(storage) if storage else opened.workspace.study_storage())
    app = dashboard.wsgi(url)

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # one line per request is noise
            logger.debug(format, *args)

    server = _listen(make_server, host, port, app, handler_class=_Quiet)  # listening from here on
    address = f"http://{host}:{server.server_port}"
    logger.info("optuna-dashboard on %s at %s", masked_url(url), address)
    if on_ready is not None:
        on_ready(address)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C is how a dashboard is stopped: not a failure
        logger.info("optuna-dashboard stopped")
    finally:
        server.server_close()


def _listen(make_server: Callable[..., Any], host: str, port: int, app: Any, **options: Any) -> Any:
    """``make_server(host, port, app)``, with a socket error turned into a message saying what to change."""
    try:
        return make_server(host, port, app, **options)
    except OSError as exc:
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            fix = (f"port {port} on {host} is already in use (another dashboard or server?). Stop that one, or "
                   "choose another port (port= in Python, --port on the command line; 0 picks a free one)")
        elif exc.errno == errno.EACCES:
            fix = (f"listening on port {port} is not permitted here (ports below 1024 need privileges). Choose a "
                   "port from 1024 up (port= / --port; 0 picks a free one)")
        elif exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
            fix = (f"{host!r} is not an address of this machine. Give one of its addresses or host names "
                   "(host= / --host; 127.0.0.1 for this machine only, 0.0.0.0 for every interface)")
        else:
            fix = "check the host and port (host= / --host, port= / --port)"
        raise ValidationError(f"Cannot serve the Optuna dashboard on {where}: {exc.strerror or exc}; {fix}.") from None
