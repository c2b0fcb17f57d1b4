"""Optuna storages that several processes can share, and study claims that let them split the work.

Two processes fitting the same stack on one storage would otherwise run the same studies at the
same time: trial counts overshoot, and Optuna's sampler no longer sees the history it would see
alone, so the result depends on the race. Instead, each study is *claimed* by one process (a row
in the table ``ensemble_kit_study_claims`` of the same database); the claimer runs the whole
study as a single process would, the others tune other studies meanwhile and reuse the finished
one. So a stack fitted by N processes equals the one a single process fits, and every study ends
with exactly ``n_trials`` completed trials.

A claim is kept alive by a heartbeat (a counter the owner bumps every :data:`BEAT_INTERVAL_S`
seconds). A waiter that sees the counter stand still for :data:`STALE_AFTER_S` seconds of its own
clock takes the claim over (a compare-and-set, so only one waiter wins): no clocks of different
machines are compared. The taker fails the dead owner's unfinished trials and completes the study.
"""

from __future__ import annotations

import contextvars
import difflib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from filelock import FileLock

from ensemble_kit._optional import missing_dependency
from ensemble_kit.errors import MissingDependencyError, StudyStorageError, ValidationError

__all__ = ["open_storage", "check_url", "check_storage", "masked_url", "run_shared", "StudyClaims", "StudyBusy"]

logger = logging.getLogger(__name__)

BEAT_INTERVAL_S = 5.0
STALE_AFTER_S = 60.0
POLL_S = 0.5
CLAIMS_TABLE = "ensemble_kit_study_claims"
# a fresh PostgreSQL database raced by several processes creating Optuna's tables at once
_SCHEMA_RETRIES = 6
# the driver module SQLAlchemy imports for a URL's backend (its install hint: _optional._HINTS)
_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql"}
# what a URL's scheme is mistyped as, and the SQLAlchemy name meant ("postgres://" is what Heroku
# and libpq accept, but SQLAlchemy dropped that alias in 1.4)
_SCHEME_FIXES = {"postgres": "postgresql", "pgsql": "postgresql", "psql": "postgresql", "pg": "postgresql",
                 "postgre": "postgresql", "postgressql": "postgresql", "sqlite3": "sqlite", "mysqldb": "mysql"}
_KNOWN_BACKENDS = ("postgresql", "mysql", "mariadb", "sqlite", "oracle", "mssql")
_EXAMPLE_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql", "sqlite": "pysqlite"}
_URL_EXAMPLES = "'sqlite:///optuna.db' or 'postgresql://user:pass@host:5432/db'"
# a password as a query argument (libpq and pymysql read it there too)
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&#]*")
# the user-info part of a URL SQLAlchemy cannot parse: up to the last '@', so a password holding
# '@' or '/' is masked whole (masking too much only shortens what is shown)
_RAW_USERINFO = re.compile(r"^((?:[A-Za-z][\w+.-]*://)?[^:/?#@\s]*):.*@")

T = TypeVar("T")


# ---------------------------------------------------------------------- storages
_OPENED: dict[str, optuna.storages.RDBStorage] = {}
_OPENED_LOCK = threading.Lock()


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (what logs, errors and summaries show).

    The password of the user part and a ``password=`` query argument are masked, also in a URL
    SQLAlchemy cannot parse (a mistyped port, an unescaped ``@`` in the password).

    Examples
    --------
    >>> masked_url("postgresql://me:s3cret@host/db")
    'postgresql://me:***@host/db'
    >>> masked_url("postgresql://me:s3cret@host:port/db")
    'postgresql://me:***@host:port/db'
    """
    try:
        parsed = sa.engine.make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: masked as text
        parsed = None
    if parsed is None or _cut_password(parsed):
        shown = _RAW_USERINFO.sub(r"\1:***@", url)
    elif parsed.password is not None:
        shown = parsed.render_as_string(hide_password=True)
    else:  # nothing to hide: shown as written (rendering would escape e.g. ':memory:')
        shown = url
    return _QUERY_PASSWORD.sub(r"\1***", shown)


def _cut_password(parsed: sa.engine.URL) -> bool:
    """Whether an unescaped '@' (or '/') in the password made SQLAlchemy cut it in two, leaving a
    part in the host or the database name (where masking would not hide it)."""
    return "@" in (parsed.host or "") or (parsed.get_backend_name() != "sqlite" and "@" in (parsed.database or ""))


def _driver_text(text: str, url: str) -> str:
    """A driver's message on one line, with the password of ``url`` masked should the driver quote it."""
    # libpq's hints span lines (a command-line error is one line) and end in '?' or '.' (the
    # message goes on after it)
    text = " ".join(text.split()).rstrip(".?! ")
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        return text
    secrets = [parsed.password] + [v for k, v in parsed.query.items() if k.lower() in ("password", "passwd", "pwd")]
    for secret in secrets:
        for value in ([secret] if isinstance(secret, str) else list(secret or ())):
            if value and len(value) > 2:  # masking "a" everywhere would garble the message for nothing
                text = text.replace(value, "***")
    return text


def check_url(url: str) -> sa.engine.URL:
    """``url`` parsed, if it names a database SQLAlchemy can open; checked without connecting.

    Parameters
    ----------
    url : str
        A database URL, ``$VARS`` already expanded.

    Returns
    -------
    sqlalchemy.engine.URL

    Raises
    ------
    StudyStorageError
        Not a URL, an unknown database or driver (``postgres://`` for ``postgresql://``), an
        SQLite URL with a user, password or host, or an in-memory SQLite database (which another
        process cannot share). The message shows the URL with its password masked, and the fix.
    """
    shown = masked_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except ValueError as exc:  # e.g. int() of a port that is not a number
        raise StudyStorageError(f"Optuna storage {shown!r} is not a database URL ({exc}): the port, after the "
                                f"host's ':', must be a number; expected e.g. {_URL_EXAMPLES}.") from None
    except sa.exc.ArgumentError as exc:
        raise StudyStorageError(f"Optuna storage {shown!r} is not a database URL ({exc}); expected e.g. "
                                f"{_URL_EXAMPLES}.") from None
    if _cut_password(parsed):
        raise StudyStorageError(
            f"Optuna storage {shown!r}: the password (or user) holds an '@' or '/' that is not escaped, so the URL "
            "cannot be read; write '@' as %40, '/' as %2F and ':' as %3A in it.")
    try:
        parsed.get_dialect()  # loads SQLAlchemy's dialect only; its driver is imported on connecting
    except sa.exc.NoSuchModuleError:
        raise StudyStorageError(_unknown_scheme(parsed, shown)) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.username or parsed.password or parsed.host or parsed.port:
            meant = masked_url(f"sqlite:///{parsed.database or 'optuna.db'}")
            raise StudyStorageError(
                f"Optuna storage {shown!r}: an SQLite URL names a file, never a user, password or host; did you "
                f"mean {meant!r}? (sqlite:///relative/path.db or sqlite:////absolute/path.db)")
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:") or parsed.query.get("mode") == "memory":
            raise StudyStorageError(f"Optuna storage {shown!r}: an in-memory SQLite database cannot be shared; give "
                                    "a file (sqlite:///path/optuna.db) or storage=None.")
    return parsed


def _unknown_scheme(parsed: sa.engine.URL, shown: str) -> str:
    """What is wrong with a URL whose database or driver SQLAlchemy does not know, and the fix."""
    backend = parsed.get_backend_name()
    driver = parsed.drivername.partition("+")[2]
    meant = _SCHEME_FIXES.get(backend.lower()) or next(iter(difflib.get_close_matches(backend.lower(), _KNOWN_BACKENDS,
                                                                                      n=1, cutoff=0.6)), None)
    if meant is not None and meant != backend:
        fixed = parsed.set(drivername=meant if not driver else f"{meant}+{driver}")
        return (f"Optuna storage {shown!r}: SQLAlchemy knows no database {backend!r}; did you mean "
                f"{masked_url(fixed.render_as_string(hide_password=False))!r}?")
    if backend in _KNOWN_BACKENDS and driver:
        plain = masked_url(parsed.set(drivername=backend).render_as_string(hide_password=False))
        example = f" (e.g. {backend}+{_EXAMPLE_DRIVERS[backend]})" if backend in _EXAMPLE_DRIVERS else ""
        return (f"Optuna storage {shown!r}: SQLAlchemy has no driver {driver!r} for {backend}; leave it out "
                f"({plain!r}) or name one SQLAlchemy knows{example}.")
    return (f"Optuna storage {shown!r}: SQLAlchemy knows no database {parsed.drivername!r}; give a URL of one it "
            f"knows ({', '.join(_KNOWN_BACKENDS)}), e.g. {_URL_EXAMPLES}.")


def open_storage(storage: str | optuna.storages.BaseStorage | None) -> optuna.storages.BaseStorage | None:
    """The Optuna storage for ``storage``: ``None`` (in memory), a storage object (as is), or a
    database URL, opened once per process and safe to open from several processes at once.

    ``$VARS`` in a URL are expanded from the environment, so a password need not be written in a
    config file (``postgresql://user:${PGPASSWORD}@host/db``). SQLite files get a busy timeout and
    their schema is created under a file lock; on other databases schema creation is retried,
    since processes racing to create Optuna's tables on a fresh database collide.
    """
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if not isinstance(storage, str) or not storage:
        raise ValidationError(f"storage must be None, an Optuna storage or a database URL such as "
                              f"'sqlite:///optuna.db' or 'postgresql://user:pass@host/db'; got {storage!r}.")
    url = os.path.expandvars(storage)
    with _OPENED_LOCK:
        if url not in _OPENED:
            _OPENED[url] = _open_rdb(url)
        return _OPENED[url]


def _open_rdb(url: str) -> optuna.storages.RDBStorage:
    parsed = check_url(url)
    shown = masked_url(url)
    if parsed.get_backend_name() == "sqlite":
        from ensemble_kit.store._workspace import check_lock_file

        lock = Path(parsed.database).with_name(Path(parsed.database).name + ".lock")
        check_lock_file(lock)
        with FileLock(str(lock), timeout=120):
            return _create(url, shown, {"connect_args": {"timeout": 60}}, retries=1)
    return _create(url, shown, {"pool_pre_ping": True}, retries=_SCHEMA_RETRIES)


def _create(url: str, shown: str, engine_kwargs: dict[str, Any], *, retries: int) -> optuna.storages.RDBStorage:
    attempt = 0
    while True:
        attempt += 1
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            StudyClaims.for_engine(storage.engine)  # the claims table, under the same guard
            return storage
        except ImportError as exc:
            raise _missing_driver(url, shown, exc) from None
        except sa.exc.OperationalError as exc:
            if attempt >= retries or "connect" in str(exc).lower():
                raise _cannot_open(url, shown, exc) from None
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError) as exc:
            if attempt >= retries:
                raise StudyStorageError(f"Cannot create Optuna's tables in {shown!r}: "
                                        f"{_driver_text(str(exc.orig), url)}.") from None
        except sa.exc.DBAPIError as exc:  # e.g. a damaged or foreign file in place of the SQLite database
            raise _not_a_study_database(url, shown, exc) from None
        except sa.exc.ArgumentError as exc:  # an argument of the URL the dialect refuses
            raise StudyStorageError(f"Optuna storage {shown!r}: {_driver_text(str(exc), url)}. Fix the URL; expected "
                                    f"e.g. {_URL_EXAMPLES}.") from None
        time.sleep(0.2 * attempt)


def check_storage(url: str) -> str:
    """``url`` if it is the URL of a database that holds Optuna studies, checked without writing
    to it (no file, table or claim is created): what optuna-dashboard is pointed at.

    Parameters
    ----------
    url : str
        A database URL, ``$VARS`` already expanded (a store's own ``sqlite:///STORE/optuna.db``
        is used as is: a ``$`` in a folder name is no variable).

    Returns
    -------
    str
        ``url`` (with its password: give it to the dashboard, never print it).

    Raises
    ------
    StudyStorageError
        The URL is not one of a database (see :func:`check_url`), an SQLite file does not exist,
        the server does not answer or refuses the user, the file is not a database, or the
        database has no Optuna tables. The message shows the URL with its password masked.
    MissingDependencyError
        The database's driver is not installed.
    ValidationError
        ``url`` is not a non-empty string.
    """
    if not isinstance(url, str) or not url:
        raise ValidationError(f"storage must be a database URL such as {_URL_EXAMPLES}; got {url!r}.")
    parsed = check_url(url)
    shown = masked_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and not Path(parsed.database).is_file():
        # SQLite would create an empty database there: a mistyped path would show no studies
        relative = "" if Path(parsed.database).is_absolute() else f" (relative to {os.getcwd()!r})"
        raise StudyStorageError(
            f"Optuna storage {shown!r}: there is no database file {parsed.database!r}{relative}, so there are no "
            "studies to show. Check the path, or fit a stack on that storage first (ensemble-kit stack STORE "
            "--storage URL).")
    try:
        engine = sa.create_engine(url, **({"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}))
    except ImportError as exc:
        raise _missing_driver(url, shown, exc) from None
    except sa.exc.ArgumentError as exc:
        raise StudyStorageError(f"Optuna storage {shown!r}: {_driver_text(str(exc), url)}. Fix the URL; expected e.g. "
                                f"{_URL_EXAMPLES}.") from None
    try:
        with engine.connect() as connection:
            has_studies = sa.inspect(connection).has_table("studies")
    except sa.exc.OperationalError as exc:
        raise _cannot_open(url, shown, exc) from None
    except sa.exc.DBAPIError as exc:
        raise _not_a_study_database(url, shown, exc) from None
    finally:
        engine.dispose()
    if not has_studies:
        raise StudyStorageError(
            f"Optuna storage {shown!r} holds no Optuna studies (no table 'studies'): check that the URL names the "
            "database the stacks were fitted on, or fit one there first (ensemble-kit stack STORE --storage URL).")
    return url


def _missing_driver(url: str, shown: str, exc: ImportError) -> MissingDependencyError:
    backend = sa.engine.make_url(url).get_backend_name()
    return missing_dependency(_DRIVERS.get(backend, backend), feature=f"The Optuna storage {shown!r}", cause=exc)


def _cannot_open(url: str, shown: str, exc: sa.exc.DBAPIError) -> StudyStorageError:
    return StudyStorageError(f"Cannot open the Optuna storage {shown!r}: {_driver_text(str(exc.orig), url)}. "
                             "Check that the database server runs and the URL, user and password are right.")


def _not_a_study_database(url: str, shown: str, exc: sa.exc.DBAPIError) -> StudyStorageError:
    return StudyStorageError(f"Optuna storage {shown!r} is not a usable study database: "
                             f"{_driver_text(str(exc.orig), url)}. Move it aside (stacks refit their studies) or "
                             "give another storage.")


# ---------------------------------------------------------------------- claims
class StudyBusy(Exception):
    """Internal signal: another process is tuning this study; :func:`run_shared` defers the task."""


_DEFER_BUSY = contextvars.ContextVar("ensemble_kit_defer_busy", default=False)


def run_shared(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``tasks`` in order, except that a task reaching a study another process is tuning is
    put off until the others are done (then it waits for that study, and reuses it).

    Every task must be safe to restart from the beginning. With one process (or an in-memory
    storage) this is a plain loop.
    """
    results: dict[int, T] = {}
    deferred = []
    for i, task in enumerate(tasks):
        token = _DEFER_BUSY.set(True)
        try:
            results[i] = task()
        except StudyBusy:
            deferred.append(i)
        finally:
            _DEFER_BUSY.reset(token)
    for i in deferred:
        token = _DEFER_BUSY.set(False)
        try:
            results[i] = tasks[i]()
        finally:
            _DEFER_BUSY.reset(token)
    return [results[i] for i in range(len(tasks))]


def defer_busy() -> bool:
    """Whether a study another process holds should raise :class:`StudyBusy` (else: wait for it)."""
    return _DEFER_BUSY.get()


class StudyClaims:
    """Claims of one database's studies by this process (one instance per engine)."""

    _instances: dict[int, StudyClaims] = {}
    _guard = threading.Lock()

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        metadata = sa.MetaData()
        self.table = sa.Table(CLAIMS_TABLE, metadata,
                              sa.Column("study_name", sa.String(512), primary_key=True),
                              sa.Column("owner", sa.String(128), nullable=False),
                              sa.Column("beat", sa.BigInteger, nullable=False))
        metadata.create_all(engine, checkfirst=True)
        self.held: set[str] = set()
        self._heart: threading.Thread | None = None

    @classmethod
    def for_engine(cls, engine: sa.engine.Engine) -> StudyClaims:
        with cls._guard:
            key = id(engine)
            if key not in cls._instances or cls._instances[key].engine is not engine:
                cls._instances[key] = cls(engine)
            return cls._instances[key]

    def acquire(self, name: str) -> bool:
        try:
            with self.engine.begin() as conn:
                conn.execute(self.table.insert().values(study_name=name, owner=self.owner, beat=0))
        except sa.exc.IntegrityError:
            return False
        self._hold(name)
        return True

    def holder(self, name: str) -> tuple[str, int] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.table.c.owner, self.table.c.beat)
                               .where(self.table.c.study_name == name)).first()
        return None if row is None else (str(row[0]), int(row[1]))

    def take_over(self, name: str, owner: str, beat: int) -> bool:
        """Take a stale claim, if it still is ``owner``'s at ``beat`` (only one waiter wins)."""
        t = self.table
        with self.engine.begin() as conn:
            taken = conn.execute(t.update().where(t.c.study_name == name, t.c.owner == owner, t.c.beat == beat)
                                 .values(owner=self.owner, beat=0)).rowcount == 1
        if taken:
            self._hold(name)
        return taken

    def release(self, name: str) -> None:
        self.held.discard(name)
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.study_name == name, t.c.owner == self.owner))

    def _hold(self, name: str) -> None:
        self.held.add(name)
        with self._guard:
            if self._heart is None:  # one beating thread per database, for the life of the process
                self._heart = threading.Thread(target=self._beat, name="ensemble_kit-study-heartbeat", daemon=True)
                self._heart.start()

    def _beat(self) -> None:
        t = self.table
        while True:
            time.sleep(BEAT_INTERVAL_S)
            if not self.held:
                continue
            try:
                with self.engine.begin() as conn:
                    conn.execute(t.update().where(t.c.owner == self.owner).values(beat=t.c.beat + 1))
            except sa.exc.SQLAlchemyError as exc:  # a missed beat is retried; a waiter tolerates many
                logger.debug("study claim heartbeat failed: %s", exc)


def claims_for(storage: optuna.storages.BaseStorage | None) -> StudyClaims | None:
    """The claims of a database storage (``None`` for in-memory and journal storages)."""
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, optuna.storages.RDBStorage):
        return StudyClaims.for_engine(backend.engine)
    return None


def wait_for_claim(claims: StudyClaims, name: str, *, finished: Callable[[], bool]) -> bool:
    """Wait until this process holds the claim of ``name`` (True), or the study is finished by
    its holder (False). A holder whose heartbeat stops for :data:`STALE_AFTER_S` is taken over."""
    seen: tuple[str, int] | None = None
    since = time.monotonic()
    logged = False
    while True:
        if finished():
            return False
        if claims.acquire(name):
            return True
        holder = claims.holder(name)
        if holder is None:
            continue
        if holder != seen:
            seen, since = holder, time.monotonic()
        elif time.monotonic() - since > STALE_AFTER_S:
            if claims.take_over(name, *holder):
                logger.warning("study %s: its claim by %s went stale (no heartbeat for %.0f s); taking it over",
                               name, holder[0], STALE_AFTER_S)
                return True
        if not logged:
            logger.info("study %s is being tuned by %s: waiting to reuse it", name, holder[0])
            logged = True
        time.sleep(POLL_S)
