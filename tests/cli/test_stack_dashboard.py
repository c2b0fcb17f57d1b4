import sys
import types

import numpy as np
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.cli.main import main
from ensemble_kit.errors import MissingDependencyError, StoreError
from ensemble_kit.report import launch_dashboard


@pytest.fixture
def small_store(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    store = LogitStore.create(tmp_path / "s", np.arange(150), y, [0, 1, 2], n_folds=3, test_ids=np.arange(20))
    for i in range(3):
        store.put(f"m{i}", np.eye(3)[y] * (1 + i) + rng.normal(size=(150, 3)), rng.normal(size=(20, 3)))
    return store


def test_stack_then_dashboard(small_store, capsys, monkeypatch):
    assert main(["stack", str(small_store.path), "--recipe", "hill_climb"]) == 0
    out = capsys.readouterr().out
    assert "hill_climbing" in out and "mean_probs" in out
    assert main(["stack", str(small_store.path), "--recipe", "aoi", "--n-trials", "5"]) == 0
    assert (small_store.path / "optuna.db").is_file()
    import socket
    from wsgiref.simple_server import WSGIServer

    apps, served = [], []

    def fake_wsgi(storage):
        apps.append(storage)
        return lambda environ, start_response: [b""]

    def serve_forever(server):  # by the time the server serves, the URL is printed and the port answers
        printed = capsys.readouterr().out
        served.append((server.server_port, printed))
        socket.create_connection(("127.0.0.1", server.server_port), timeout=5).close()

    monkeypatch.setitem(sys.modules, "optuna_dashboard", types.SimpleNamespace(wsgi=fake_wsgi))
    monkeypatch.setattr(WSGIServer, "serve_forever", serve_forever)
    assert main(["dashboard", str(small_store.path), "--port", "0"]) == 0
    (port, printed), = served
    assert f"at http://127.0.0.1:{port} " in printed and apps[0].endswith("/s/optuna.db")
    import optuna

    assert len(optuna.get_all_study_summaries(apps[0])) == 4  # 3 folds + final of the soft vote
    study = optuna.load_study(study_name=optuna.get_all_study_summaries(apps[0])[0].study_name, storage=apps[0])
    assert study.user_attrs["stack"] == "aoi" and study.user_attrs["stage"] == "soft_vote"
    assert study.user_attrs["models"] == ["m0", "m1", "m2"] and {"w:m0", "w:m1", "w:m2"} <= set(study.best_params)


def test_dashboard_errors(small_store, monkeypatch):
    with pytest.raises(StoreError, match="no Optuna studies yet"):
        launch_dashboard(small_store)
    (small_store.path / "optuna.db").touch()
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "ensemble_kit\[dashboard\]"'):
        launch_dashboard(small_store)


def test_two_concurrent_stacks_on_one_store_both_succeed_with_exact_trial_counts(small_store, tmp_path):
    import shutil
    import subprocess

    import optuna

    from ensemble_kit.project import load_stack

    reference = tmp_path / "reference"
    shutil.copytree(small_store.path, reference)
    command = [sys.executable, "-m", "ensemble_kit.cli.main", "stack", "--recipe", "aoi", "--n-trials", "25"]
    runs = [subprocess.Popen([*command, str(small_store.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)]
    outputs = [run.communicate(timeout=240) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    storage = f"sqlite:///{small_store.path / 'optuna.db'}"
    summaries = optuna.study.get_all_study_summaries(storage)
    assert summaries and all(s.n_trials == 25 for s in summaries)
    for summary in summaries:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 25
    assert subprocess.run([*command, str(reference)], capture_output=True).returncode == 0
    raced, alone = load_stack(small_store), load_stack(LogitStore(reference))
    np.testing.assert_array_equal(raced.test_proba, alone.test_proba)
    np.testing.assert_array_equal(raced.oof_proba, alone.oof_proba)


@pytest.mark.parametrize("name", ["./../entries", "../x", "full\n", "a/b"])
def test_stack_name_that_is_not_one_file_name_is_refused_before_anything_is_written(small_store, capsys, name):
    from helpers import snapshot

    before = snapshot(small_store.path)
    assert main(["stack", str(small_store.path), "--recipe", "hill_climb", "--name", name]) == 2
    assert "Invalid stack name" in capsys.readouterr().err
    assert snapshot(small_store.path) == before and small_store.models() == ["m0", "m1", "m2"]


def test_stack_names_differing_only_in_case_are_refused(small_store, capsys):
    assert main(["stack", str(small_store.path), "--recipe", "hill_climb", "--name", "Full"]) == 0
    assert main(["stack", str(small_store.path), "--recipe", "hill_climb", "--name", "full"]) == 2
    assert "differs only in case" in capsys.readouterr().err
    assert sorted(p.name for p in (small_store.path / "stacks").iterdir()) == ["Full"]


@pytest.fixture
def studied_store(small_store, monkeypatch):
    """A store with one study in its optuna.db, and optuna-dashboard replaced by a recorder."""
    import optuna

    from wsgiref.simple_server import WSGIServer

    optuna.create_study(study_name="s", storage=small_store.workspace.study_storage())
    monkeypatch.setattr(WSGIServer, "serve_forever", lambda server: None)  # a test never serves for real
    served: list[str] = []
    monkeypatch.setitem(sys.modules, "optuna_dashboard",
                        types.SimpleNamespace(wsgi=lambda storage: served.append(storage) or (lambda e, r: [b""])))
    return small_store, served


def test_dashboard_on_a_port_in_use_is_a_named_error(studied_store, capsys):
    import socket

    from ensemble_kit.errors import ValidationError

    store, _ = studied_store
    with socket.socket() as taken:  # loopback only: nothing outside this machine is contacted
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", str(store.path), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ensemble-kit dashboard: error: ") and len(err.splitlines()) == 1
        assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err and "Traceback" not in err
        with pytest.raises(ValidationError, match=f"port {port} on 127.0.0.1 is already in use"):
            launch_dashboard(store, port=port)


@pytest.mark.parametrize("port", [-1, 65536, True, "8080"])
def test_dashboard_port_out_of_range_is_refused(studied_store, port):
    from ensemble_kit.errors import ValidationError

    store, served = studied_store
    with pytest.raises(ValidationError, match="port must be an integer from 0 to 65535"):
        launch_dashboard(store, port=port)
    assert served == []


def test_ctrl_c_stops_the_dashboard_without_a_traceback(studied_store, monkeypatch, capsys):
    from wsgiref.simple_server import WSGIServer

    store, served = studied_store
    closed = []

    def interrupted(server):
        raise KeyboardInterrupt

    monkeypatch.setattr(WSGIServer, "serve_forever", interrupted)
    close = WSGIServer.server_close
    monkeypatch.setattr(WSGIServer, "server_close", lambda server: closed.append(server.server_port) or close(server))
    try:
        assert main(["dashboard", str(store.path), "--port", "0"]) == 0
    except KeyboardInterrupt:  # would otherwise stop the whole test session
        pytest.fail("Ctrl-C escaped from the dashboard (a traceback on the command line)")
    assert "Traceback" not in capsys.readouterr().err and len(served) == 1 and len(closed) == 1
