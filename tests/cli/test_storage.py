"""Where a stack's Optuna studies go: --storage, a project YAML's stack.storage, never a store's own say."""

from __future__ import annotations

import json
import re
import sys
import types

import numpy as np
import optuna
import pytest
import yaml

from ensemble_kit import LogitStore
from ensemble_kit.cli.main import main


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    store = LogitStore.create(tmp_path / "s", np.arange(90), y, [0, 1, 2], n_folds=3, test_ids=np.arange(10))
    for i in range(2):
        store.put(f"m{i}", np.eye(3)[y] * (1 + i) + rng.normal(size=(90, 3)), rng.normal(size=(10, 3)))
    return store


def _studies(url: str) -> list[str]:
    return sorted(s.study_name for s in optuna.get_all_study_summaries(url))


def test_stack_storage_flag_puts_the_studies_there(store, tmp_path):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert main(["stack", str(store.path), "--recipe", "aoi", "--n-trials", "5", "--storage", url]) == 0
    assert len(_studies(url)) == 4 and not (store.path / "optuna.db").exists()
    # the saved stack records the kind of storage, never its path on this machine
    text = (store.path / "stacks" / "aoi" / "stack.json").read_text()
    assert str(tmp_path) not in text and "elsewhere.db" not in text
    assert json.loads(text)["info"]["settings"]["storage"] == "sqlite://..."


def test_stack_from_a_project_yaml_uses_its_stack_storage(store, tmp_path, monkeypatch):
    monkeypatch.setenv("EK_DB_DIR", str(tmp_path))
    config = tmp_path / "project.yaml"
    config.write_text(yaml.safe_dump({"store": str(store.path), "models": {"m0": {}, "m1": {}},
                                      "stack": {"recipe": "aoi", "n_trials": 5, "storage": "sqlite:///${EK_DB_DIR}/p.db"}}))
    assert main(["stack", str(config)]) == 0
    assert len(_studies(f"sqlite:///{tmp_path / 'p.db'}")) == 4 and not (store.path / "optuna.db").exists()


def test_a_storage_saved_inside_a_store_is_never_used(store, tmp_path):
    # a received store whose saved settings point at a database: stacking it must not write there
    (store.path / "project").mkdir()
    planted = tmp_path / "attacker.db"
    (store.path / "project" / "project.yaml").write_text(yaml.safe_dump(
        {"stack": {"recipe": "aoi", "n_trials": 5, "storage": f"sqlite:///{planted}"}}))
    assert main(["stack", str(store.path)]) == 0
    assert not planted.exists() and len(_studies(f"sqlite:///{store.path / 'optuna.db'}")) == 4


def test_a_database_password_never_reaches_the_store(store, postgres_url):
    from sqlalchemy.engine import make_url

    with_password = make_url(postgres_url).set(password="s3cret").render_as_string(hide_password=False)
    assert main(["stack", str(store.path), "--recipe", "aoi", "--n-trials", "5", "--storage", with_password]) == 0
    assert len(_studies(postgres_url)) == 4  # the server trusts local users: the password is not checked
    text = (store.path / "stacks" / "aoi" / "stack.json").read_text()
    assert "s3cret" not in text and make_url(postgres_url).host not in text
    assert json.loads(text)["info"]["settings"]["storage"] == "postgresql://..."


def test_dashboard_opens_the_given_storage(store, tmp_path, monkeypatch, capsys):
    from wsgiref.simple_server import WSGIServer

    opened = []
    monkeypatch.setitem(sys.modules, "optuna_dashboard",
                        types.SimpleNamespace(wsgi=lambda storage: opened.append(storage) or (lambda e, r: [b""])))
    monkeypatch.setattr(WSGIServer, "serve_forever", lambda server: None)
    monkeypatch.setenv("EK_DB_DIR", str(tmp_path))
    for db in ("d.db", "y.db"):  # the dashboard shows studies that exist: it never creates a database
        optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / db}")
    assert main(["dashboard", str(store.path), "--port", "0", "--storage", "sqlite:///${EK_DB_DIR}/d.db"]) == 0
    config = tmp_path / "project.yaml"
    config.write_text(yaml.safe_dump({"store": str(store.path), "models": {"m0": {}},
                                      "stack": {"storage": "sqlite:///${EK_DB_DIR}/y.db"}}))
    assert main(["dashboard", str(config), "--port", "0"]) == 0
    assert opened == [f"sqlite:///{tmp_path}/d.db", f"sqlite:///{tmp_path}/y.db"]


def test_a_damaged_study_database_in_a_received_store_is_a_named_error(store, capsys):
    from helpers import snapshot

    (store.path / "optuna.db").write_bytes(b"not a database " * 100)
    before = snapshot(store.path)
    assert main(["stack", str(store.path), "--recipe", "aoi", "--n-trials", "5"]) == 2
    err = capsys.readouterr().err
    assert "is not a usable study database" in err and "optuna.db" in err
    assert snapshot(store.path) == before and store.models() == ["m0", "m1"]


def test_a_planted_link_as_the_study_lock_is_refused_and_its_target_untouched(store, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (store.path / "optuna.db.lock").symlink_to(outside)
    assert main(["stack", str(store.path), "--recipe", "aoi", "--n-trials", "5"]) == 2
    assert "is a link or not a plain file" in capsys.readouterr().err
    assert outside.read_text() == "precious" and not (store.path / "optuna.db").exists()


# ---------------------------------------------------------------------- bad storage URLs: named, masked, fixable
SECRET = "s3cretpw"


def _unused_port() -> int:
    """A loopback port nothing listens on (bound, then let go): a server that does not answer."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bad_urls() -> list:
    port = _unused_port()
    cases = {
        "postgres-scheme": (f"postgres://me:{SECRET}@127.0.0.1:{port}/db",
                            rf"did you mean 'postgresql://me:\*\*\*@127\.0\.0\.1:{port}/db'"),
        "postgres-scheme-with-driver": (f"postgres+psycopg://me:{SECRET}@127.0.0.1:{port}/db",
                                        r"did you mean 'postgresql\+psycopg://me:\*\*\*@"),
        "sqlite-with-credentials": (f"sqlite://me:{SECRET}@/x.db",
                                    r"never a user, password or host; did you mean 'sqlite:///x\.db'"),
        "unknown-scheme": (f"nosuchdb://me:{SECRET}@127.0.0.1:{port}/db",
                           r"knows no database 'nosuchdb'.*sqlite:///optuna\.db"),
        "unknown-driver": (f"postgresql+nodriver://me:{SECRET}@127.0.0.1:{port}/db",
                           r"no driver 'nodriver' for postgresql; leave it out"),
        "port-not-a-number": (f"postgresql://me:{SECRET}@127.0.0.1:notaport/db",
                              r"me:\*\*\*@127\.0\.0\.1:notaport/db.*must be a number"),
        "unescaped-at-in-password": (f"postgresql://me:{SECRET[:4]}@{SECRET[4:]}@127.0.0.1:{port}/db",
                                     r"not escaped.*%40"),
        "password-in-query": (f"postgresql://me@127.0.0.1:{port}/db?password={SECRET}", r"password=\*\*\*"),
        # no server on that port (or, without the driver installed, no driver): named either way
        "server-does-not-answer": (f"postgresql://me:{SECRET}@127.0.0.1:{port}/db",
                                   r"Cannot open the Optuna storage 'postgresql://me:\*\*\*@|pip"),
        "sqlite-in-memory": ("sqlite:///:memory:", "in-memory SQLite database cannot be shared"),
    }
    return [pytest.param(url, expected, id=name) for name, (url, expected) in cases.items()]


@pytest.mark.parametrize(("url", "expected"), _bad_urls())
def test_a_bad_storage_url_is_a_named_error_with_the_password_masked(url, expected, tmp_path, monkeypatch):
    from ensemble_kit.ensemble._claims import open_storage
    from ensemble_kit.errors import MissingDependencyError, StudyStorageError

    monkeypatch.chdir(tmp_path)
    with pytest.raises((StudyStorageError, MissingDependencyError)) as raised:
        open_storage(url)
    message = str(raised.value)
    assert re.search(expected, message) and SECRET not in message and SECRET[4:] not in message
    error = raised.value  # no SQLAlchemy exception chained to it, to be printed with its URL
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert list(tmp_path.iterdir()) == []  # refused before any file (an SQLite lock) is made


@pytest.mark.parametrize(("url", "expected"), _bad_urls())
def test_stack_with_a_bad_storage_is_one_error_line(url, expected, store, tmp_path, monkeypatch, capsys):
    from helpers import snapshot

    monkeypatch.chdir(tmp_path)
    before = snapshot(store.path)
    assert main(["stack", str(store.path), "--recipe", "aoi", "--n-trials", "5", "--storage", url]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and SECRET not in captured.err + captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("ensemble-kit stack: error: ")]
    assert len(errors) == 1 and re.search(expected, errors[0])
    assert snapshot(store.path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_masked_url_hides_the_password_of_urls_sqlalchemy_cannot_read():
    from ensemble_kit.ensemble._claims import masked_url

    assert masked_url(f"postgresql://me:{SECRET}@h:port/db") == "postgresql://me:***@h:port/db"
    assert masked_url(f"postgresql://me:p@{SECRET}@h/db") == "postgresql://me:***@h/db"
    assert masked_url(f"postgresql://me:p@s/{SECRET}@h/db") == "postgresql://me:***@h/db"
    assert masked_url(f"postgresql://me@h/db?sslmode=require&password={SECRET}") == \
        "postgresql://me@h/db?sslmode=require&password=***"
    assert masked_url("sqlite:///:memory:") == "sqlite:///:memory:"  # nothing to hide: shown as written


@pytest.fixture
def fake_dashboard(monkeypatch):
    """optuna-dashboard stand-in: records the storages it is given; the server returns at once."""
    from wsgiref.simple_server import WSGIServer

    opened: list[str] = []
    monkeypatch.setitem(sys.modules, "optuna_dashboard",
                        types.SimpleNamespace(wsgi=lambda storage: opened.append(storage) or (lambda e, r: [b""])))
    monkeypatch.setattr(WSGIServer, "serve_forever", lambda server: None)
    return opened


def _not_a_database(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"not a database " * 100)
    return f"sqlite:///{tmp_path / 'junk.db'}"


def _no_studies(tmp_path):
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").close()
    return f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.mark.parametrize(("make_url", "expected"), [
    (lambda tmp: f"postgres://me:{SECRET}@127.0.0.1:{_unused_port()}/db", "did you mean 'postgresql://"),
    (lambda tmp: f"postgresql://me:{SECRET}@127.0.0.1:{_unused_port()}/db", "Cannot open the Optuna storage|pip"),
    (lambda tmp: f"sqlite:///{tmp / 'missing.db'}", "there is no database file"),
    (_not_a_database, "is not a usable study database"),
    (_no_studies, "holds no Optuna studies"),
])
def test_dashboard_on_a_bad_storage_is_a_named_error_and_serves_nothing(make_url, expected, store, tmp_path,
                                                                       fake_dashboard, capsys):
    from ensemble_kit.errors import MissingDependencyError, StudyStorageError
    from ensemble_kit.report import launch_dashboard
    from helpers import snapshot

    url = make_url(tmp_path)
    before = snapshot(tmp_path)
    assert main(["dashboard", str(store.path), "--port", "0", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ensemble-kit dashboard: error: ") and len(err.splitlines()) == 1
    assert re.search(expected, err) and "Traceback" not in err and SECRET not in err
    with pytest.raises((StudyStorageError, MissingDependencyError), match=expected):
        launch_dashboard(store, port=0, storage=url)
    assert fake_dashboard == [] and snapshot(tmp_path) == before  # nothing served, no database made


def test_dashboard_on_a_damaged_store_database_is_a_named_error(store, fake_dashboard, capsys):
    (store.path / "optuna.db").write_bytes(b"not a database " * 100)
    assert main(["dashboard", str(store.path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "is not a usable study database" in err and "optuna.db" in err and "Traceback" not in err
    assert fake_dashboard == []


def test_dashboard_opens_a_stores_own_database_whose_path_holds_a_dollar(tmp_path, fake_dashboard, monkeypatch):
    # only a given URL has its $VARS expanded: a '$' in the store's folder name is part of the name
    monkeypatch.setenv("EK_NOT_A_FOLDER", "elsewhere")
    store = LogitStore.create(tmp_path / "runs$EK_NOT_A_FOLDER" / "s", np.arange(30), np.arange(30) % 3, [0, 1, 2],
                              n_folds=3)
    optuna.create_study(study_name="s", storage=store.workspace.study_storage())
    assert main(["dashboard", str(store.path), "--port", "0"]) == 0
    assert fake_dashboard == [store.workspace.study_storage()] and "$EK_NOT_A_FOLDER" in fake_dashboard[0]
