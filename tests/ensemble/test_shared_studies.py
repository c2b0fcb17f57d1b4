"""Several processes tuning one stack's studies on one storage (SQLite and PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import optuna
import pytest

from ensemble_kit.ensemble import _claims
from ensemble_kit.ensemble._claims import StudyClaims, claims_for, masked_url, open_storage, run_shared
from ensemble_kit.ensemble._optuna import run_study
from ensemble_kit.errors import MissingDependencyError, StudyStorageError

N_TRIALS = 25

# A stack with several studies (a soft vote's final study and one per fold, a hill-climbing stage and
# a tuned blend of both): what two processes split between them.
_JOB = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import numpy as np
    from ensemble_kit import Blender, HillClimbing, SoftVoting, Stacker

    storage, out, barrier, n_processes = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    # start tuning together: under load one process can finish its imports after the other has
    # claimed every study, and the split this job is run for would not happen
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < n_processes and time.monotonic() < deadline:
        time.sleep(0.05)
    rng = np.random.default_rng(0)
    y = np.arange(240) % 4
    logits = {f"m{i}": np.eye(4)[y] * (0.5 + i / 2) + rng.normal(size=(240, 4)) for i in range(3)}
    test = {name: rng.normal(size=(30, 4)) for name in logits}
    stages = [("vote", SoftVoting("optuna", n_trials=N_TRIALS_HERE)), ("hc", HillClimbing(n_iter=10))]
    stk = Stacker(stages=stages, n_trials=N_TRIALS_HERE, seed=0, storage=storage).fit(logits, y, folds=np.arange(240) % 3)
    np.savez(out, oof=stk.oof_proba_, test=stk.predict_proba(test), weights=list(stk.ensemble_.weights_.values()),
             studies=np.array(sorted(stk.study_names_)))
""").replace("N_TRIALS_HERE", str(N_TRIALS))


def _run_jobs(tmp_path, storage: str, n_processes: int, tag: str) -> list[dict]:
    script = tmp_path / "job.py"
    script.write_text(_JOB)
    outs = [tmp_path / f"{tag}{i}.npz" for i in range(n_processes)]
    barrier = tmp_path / f"{tag}-ready"
    barrier.mkdir()
    runs = [subprocess.Popen([sys.executable, str(script), storage, str(out), str(barrier), str(n_processes)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for out in outs]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0] * n_processes, [e.decode()[-3000:] for e in errors]
    return [dict(np.load(out)) for out in outs]


def _check_split_run(tmp_path, shared: str, alone: str) -> None:
    raced = _run_jobs(tmp_path, shared, 2, "raced")
    single, = _run_jobs(tmp_path, alone, 1, "alone")
    for result in raced:  # both processes end with the single-process stack
        for key in ("oof", "test", "weights", "studies"):
            np.testing.assert_array_equal(result[key], single[key], err_msg=key)
    summaries = optuna.get_all_study_summaries(shared)
    assert sorted(s.study_name for s in summaries) == sorted(single["studies"].tolist())
    tuned_by = set()
    for summary in summaries:
        study = optuna.load_study(study_name=summary.study_name, storage=shared)
        states = [t.state for t in study.trials]
        assert states.count(optuna.trial.TrialState.COMPLETE) == N_TRIALS == len(states), summary.study_name
        tuned_by.add(study.user_attrs["tuned_by"])
    assert len(tuned_by) == 2, f"one process tuned every study: {tuned_by}"  # the work was split
    claims = StudyClaims.for_engine(open_storage(shared).engine)
    assert all(claims.holder(s.study_name) is None for s in summaries)  # every claim released


def test_two_processes_split_one_stacks_studies_on_sqlite(tmp_path):
    _check_split_run(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}", f"sqlite:///{tmp_path / 'alone.db'}")


def test_two_processes_split_one_stacks_studies_on_postgresql(tmp_path, postgres_server):
    import postgres_server as pg

    _check_split_run(tmp_path, pg.fresh_database(postgres_server), pg.fresh_database(postgres_server))


def _quadratic(trial: optuna.Trial) -> float:
    return (trial.suggest_float("x", -1, 1) - 0.3) ** 2


def test_a_stale_claim_is_taken_over_and_the_dead_owners_trials_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(_claims, "STALE_AFTER_S", 0.5)
    monkeypatch.setattr(_claims, "POLL_S", 0.05)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    storage = open_storage(url)
    claims = claims_for(storage)
    # a process that claimed the study, started a trial and died: its claim's beat never moves again
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask()
    with claims.engine.begin() as conn:
        conn.execute(claims.table.insert().values(study_name="s", owner="dead-host:1:0", beat=7))
    start = time.monotonic()
    study = run_study("s", _quadratic, n_trials=5, seed=0, storage=url)
    assert time.monotonic() - start >= 0.5
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and states.count(optuna.trial.TrialState.COMPLETE) == 5
    assert claims.holder("s") is None


def test_a_busy_study_is_put_off_until_the_other_tasks_are_done(tmp_path, monkeypatch):
    monkeypatch.setattr(_claims, "POLL_S", 0.05)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    claims = claims_for(open_storage(url))
    with claims.engine.begin() as conn:  # another live process holds study "busy"
        conn.execute(claims.table.insert().values(study_name="busy", owner="other:2:0", beat=0))
    order: list[str] = []

    def busy() -> str:
        order.append("busy started")
        run_study("busy", _quadratic, n_trials=3, seed=0, storage=url)
        order.append("busy done")
        return "b"

    def free() -> str:
        run_study("free", _quadratic, n_trials=3, seed=0, storage=url)
        order.append("free done")
        # the other process finishes "busy" (as a single process would) and lets go of it
        optuna.create_study(study_name="busy", storage=url, load_if_exists=True).optimize(_quadratic, n_trials=3)
        threading.Timer(0.2, let_go).start()
        return "f"

    def let_go() -> None:
        with claims.engine.begin() as conn:
            conn.execute(claims.table.delete().where(claims.table.c.study_name == "busy"))

    assert run_shared([busy, free]) == ["b", "f"]
    assert order == ["busy started", "free done", "busy started", "busy done"]
    study = optuna.load_study(study_name="busy", storage=url)
    assert len(study.trials) == 3  # reused, not tuned again


def test_storage_errors_are_named_and_never_show_the_password(monkeypatch):
    with pytest.raises(StudyStorageError, match="not a database URL"):
        open_storage("no-such-scheme")
    with pytest.raises(StudyStorageError, match="in-memory SQLite"):
        open_storage("sqlite://")
    # no server on port 1 (or, without the driver installed, no driver): either way a named error
    with pytest.raises((StudyStorageError, MissingDependencyError)) as caught:
        open_storage("postgresql://me:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in str(caught.value) and "me:***@127.0.0.1:1/db" in str(caught.value)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "ensemble_kit\[postgres\]"'):
        open_storage("postgresql://me:pw@127.0.0.1:2/other")
    assert masked_url("postgresql://me:pw@h/db") == "postgresql://me:***@h/db"


def test_environment_variables_in_a_url_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("EK_TEST_DB_DIR", str(tmp_path))
    storage = open_storage("sqlite:///${EK_TEST_DB_DIR}/env.db")
    optuna.create_study(study_name="x", storage=storage)
    assert (tmp_path / "env.db").is_file()


def test_a_database_study_is_tuned_in_memory_and_gets_the_same_trials(tmp_path):
    """On a database the trials run in memory and are written once finished: the stored study holds
    exactly the trials (params, values, order) of a study tuned in memory, and resumes a partial one."""
    def objective(trial: optuna.Trial) -> float:
        return (trial.suggest_float("x", -3, 3) - 1) ** 2 + trial.suggest_float("y", 0.01, 1, log=True)

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    start = [{"x": 0.0, "y": 0.5}]
    memory = run_study("s", objective, n_trials=30, seed=3, storage=None, enqueue=start)
    stored = run_study("s", objective, n_trials=30, seed=3, storage=url, enqueue=start)
    assert [t.params for t in stored.trials] == [t.params for t in memory.trials]
    assert [t.value for t in stored.trials] == [t.value for t in memory.trials]
    assert {t.state for t in optuna.load_study(study_name="s", storage=url).trials} == {optuna.trial.TrialState.COMPLETE}
    # a study left with 10 trials (an older version, a killed write) is completed, not restarted
    partial = optuna.create_study(study_name="p", storage=url)
    partial.add_trials(memory.trials[:10])
    resumed = run_study("p", objective, n_trials=30, seed=3, storage=url, enqueue=start)
    assert len(resumed.trials) == 30 and [t.params for t in resumed.trials[:10]] == [t.params for t in memory.trials[:10]]
    assert resumed.trials[10].params != start[0]  # the starting point is queued only in a new study


def test_a_database_study_sees_no_half_run_trial(tmp_path):
    """While a study is tuned, its database holds none of its trials (no RUNNING row a dying process
    could leave behind); afterwards it holds all of them, complete."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    seen = []

    def objective(trial: optuna.Trial) -> float:
        seen.append(len(optuna.load_study(study_name="s", storage=url).trials))
        return _quadratic(trial)

    run_study("s", objective, n_trials=5, seed=0, storage=url)
    assert seen == [0] * 5
    assert len(optuna.load_study(study_name="s", storage=url).get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 5
