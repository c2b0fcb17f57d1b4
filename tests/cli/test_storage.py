"""Where a stack's Optuna studies go: --storage, a project YAML's stack.storage, never a store's own say."""

from __future__ import annotations

import json
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
    summary = json.loads((store.path / "stacks" / "aoi" / "summary.json").read_text())
    assert summary["optuna_storage"] == url and summary["config"]["storage"] == url


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
    text = (store.path / "stacks" / "aoi" / "summary.json").read_text()
    assert "s3cret" not in text and ":***@" in text


def test_dashboard_opens_the_given_storage(store, tmp_path, monkeypatch, capsys):
    from wsgiref.simple_server import WSGIServer

    opened = []
    monkeypatch.setitem(sys.modules, "optuna_dashboard",
                        types.SimpleNamespace(wsgi=lambda storage: opened.append(storage) or (lambda e, r: [b""])))
    monkeypatch.setattr(WSGIServer, "serve_forever", lambda server: None)
    monkeypatch.setenv("EK_DB_DIR", str(tmp_path))
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
