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
    calls = []
    fake = types.SimpleNamespace(run_server=lambda storage, host, port: calls.append((storage, host, port)))
    monkeypatch.setitem(sys.modules, "optuna_dashboard", fake)
    assert main(["dashboard", str(small_store.path), "--port", "9999"]) == 0
    storage, host, port = calls[0]
    assert storage.endswith("/s/optuna.db") and port == 9999 and host == "127.0.0.1"
    import optuna

    assert len(optuna.get_all_study_summaries(storage)) == 4  # 3 folds + final of the soft vote


def test_dashboard_errors(small_store, monkeypatch):
    with pytest.raises(StoreError, match="no Optuna studies yet"):
        launch_dashboard(small_store)
    (small_store.path / "optuna.db").touch()
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "ensemble_kit\[dashboard\]"'):
        launch_dashboard(small_store)
