"""A PostgreSQL server for the tests: the one ``ENSEMBLE_KIT_TEST_POSTGRES`` names (``.ci/run``
starts one and sets it), else a throw-away cluster started here from the system's binaries.

Where none can be had the tests skip with the reason, except under
``ENSEMBLE_KIT_REQUIRE_POSTGRES=1`` (CI), where that is a failure: CI never skips them silently.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

ENV_URL = "ENSEMBLE_KIT_TEST_POSTGRES"
ENV_REQUIRE = "ENSEMBLE_KIT_REQUIRE_POSTGRES"


def unavailable(reason: str) -> None:
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"PostgreSQL is required here ({ENV_REQUIRE}=1) but {reason}")
    pytest.skip(f"no PostgreSQL server: {reason}")


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        unavailable("running as root and no runuser to start the server as the postgres user")
    return [runuser, "-u", "postgres", "--", *command]


def start_cluster() -> Iterator[str]:
    """Start a temporary cluster; yield its URL (database ``postgres``); stop and delete it."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable("initdb/pg_ctl not found (install the postgresql package, or set "
                    f"{ENV_URL}=postgresql://user:pass@host:port/db)")
    folder = tempfile.mkdtemp(prefix="ek-pg-")
    data = os.path.join(folder, "data")
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres")
    port = _free_port()
    try:
        subprocess.run(_as_server_user([initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True, timeout=120)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_server_user([pg_ctl, "-D", data, "-o", options, "-l", os.path.join(folder, "log"),
                                        "-w", "start"]), check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(folder, ignore_errors=True)
        unavailable(f"a temporary cluster did not start ({exc}; {detail.decode(errors='replace')[-500:]})")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([pg_ctl, "-D", data, "-m", "immediate", "stop"]), capture_output=True,
                       timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def driver():
    """The PostgreSQL driver SQLAlchemy uses (psycopg 3: the ``postgres`` extra)."""
    try:
        import psycopg
    except ImportError:
        unavailable('the psycopg driver is not installed (pip install "ensemble_kit[postgres]")')
    return psycopg


def fresh_database(server_url: str) -> str:
    """Create an empty database on the server; its URL."""
    psycopg = driver()
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"ek_{uuid.uuid4().hex[:12]}"
    for attempt in range(20):
        try:
            conn = psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                                   dbname=url.database or "postgres", autocommit=True)
            break
        except psycopg.OperationalError:
            if attempt == 19:
                raise
            time.sleep(0.5)
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)
