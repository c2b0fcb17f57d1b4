"""A writer killed with SIGKILL at any moment leaves the store openable and consistent.

Each scenario is first run to count the file-system steps it takes (atomic renames and
deletions); then, for every step, a forked child performs the operation and SIGKILLs itself
right before that step. A last test kills a real subprocess from outside at random moments.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from ensemble_kit import LogitStore

OLD, NEW = 1.0, 2.0


def _template(tmp_path):
    store = LogitStore.create(tmp_path / "template", np.arange(90), np.arange(90) % 3, [0, 1, 2],
                              n_folds=3, test_ids=np.arange(100, 110))
    store.put("base", np.full((90, 3), OLD), np.full((3, 10, 3), OLD))
    for k in (0, 1):
        store.put_fold("partial", k, np.full((30, 3), OLD), np.full((10, 3), OLD))
    return store.path


SCENARIOS = {
    "put_new": lambda s: s.put("new", np.full((90, 3), NEW), np.full((3, 10, 3), NEW)),
    "put_overwrite": lambda s: s.put("base", np.full((90, 3), NEW), np.full((3, 10, 3), NEW), overwrite=True),
    "put_fold_completing": lambda s: s.put_fold("partial", 2, np.full((30, 3), NEW), np.full((10, 3), NEW)),
    "put_fold_overwrite": lambda s: s.put_fold("base", 1, np.full((30, 3), NEW), np.full((10, 3), NEW), overwrite=True),
    "remove": lambda s: s.remove("base"),
}


REDO = {
    "put_new": lambda s: s.put("new", np.full((90, 3), NEW), np.full((3, 10, 3), NEW), overwrite=True),
    "put_overwrite": SCENARIOS["put_overwrite"],
    "put_fold_completing": lambda s: s.put_fold(
        "partial", 2, np.full((30, 3), NEW), np.full((10, 3), NEW), overwrite=True),
    "put_fold_overwrite": SCENARIOS["put_fold_overwrite"],
    "remove": lambda s: s.remove("base") if "base" in s.models() else None,
}


def _run_and_die_at(path, scenario, kill_at, counter):
    """Child body: count mutating file-system calls; SIGKILL ourselves before call ``kill_at``."""
    calls = {"n": 0}

    def wrap(fn):
        def wrapped(*args, **kwargs):
            if calls["n"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            calls["n"] += 1
            return fn(*args, **kwargs)
        return wrapped

    os.replace, os.rename, os.unlink = wrap(os.replace), wrap(os.rename), wrap(os.unlink)
    SCENARIOS[scenario](LogitStore(path))
    counter.value = calls["n"]


def _fork_run(path, scenario, kill_at):
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("i", -1)
    child = ctx.Process(target=_run_and_die_at, args=(path, scenario, kill_at, counter))
    child.start()
    child.join(60)
    return child.exitcode, counter.value


def _check_consistent(path, scenario):
    store = LogitStore(path)
    store.verify()
    models = store.models()
    # entries not touched by the scenario are intact
    if scenario != "remove" and "base" in models and scenario not in ("put_overwrite", "put_fold_overwrite"):
        np.testing.assert_array_equal(store.oof("base"), OLD)
    if scenario != "put_fold_completing":
        assert store.incomplete() == {"partial": (2,)}
    if scenario == "put_new":
        assert "new" not in store.incomplete()
        if "new" in models:
            np.testing.assert_array_equal(store.oof("new"), NEW)
    elif scenario == "put_overwrite":
        values = np.unique(store.oof("base"))
        assert values.tolist() in ([OLD], [NEW])
        np.testing.assert_array_equal(np.unique(store.test("base", reduce=None)), values)
    elif scenario == "put_fold_overwrite":
        oof = store.oof("base")
        rows = store.fold_indices(1)
        others = np.setdiff1d(np.arange(90), rows)
        np.testing.assert_array_equal(oof[others], OLD)
        assert np.unique(oof[rows]).tolist() in ([OLD], [NEW])
    elif scenario == "put_fold_completing":
        if "partial" in models:
            oof = store.oof("partial")
            np.testing.assert_array_equal(oof[store.fold_indices(2)], NEW)
            np.testing.assert_array_equal(oof[store.fold_indices(0)], OLD)
        else:
            assert store.incomplete() == {"partial": (2,)}
    elif scenario == "remove":
        if "base" in models:
            np.testing.assert_array_equal(store.oof("base"), OLD)
    return models


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_sigkill_at_every_step_leaves_store_consistent(tmp_path, scenario):
    template = _template(tmp_path)
    exitcode, n_steps = _fork_run(shutil.copytree(template, tmp_path / "dry"), scenario, kill_at=-1)
    assert exitcode == 0 and n_steps >= 1
    outcomes = []
    for kill_at in range(n_steps):
        path = shutil.copytree(template, tmp_path / f"kill{kill_at}")
        exitcode, _ = _fork_run(path, scenario, kill_at)
        assert exitcode == -signal.SIGKILL
        outcomes.append(_check_consistent(path, scenario))
        # the next writer succeeds and cleans up whatever the killed one left behind
        store = LogitStore(path)
        REDO[scenario](store)
        store.verify()
        assert not any(p.name.endswith(".tmp") for p in (path / "entries").rglob("*"))
    # the very first step is before any change; the operation is visible only at the end
    assert outcomes[0] == _check_consistent(template, scenario)


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from ensemble_kit import LogitStore
    store = LogitStore(sys.argv[1])
    big = np.random.default_rng(0).normal(size=(20000, 300)).astype("float32")
    print("ready", flush=True)
    i = 0
    while True:
        store.put("victim", big + i, overwrite=True, meta={"i": i})
        store.put(f"entry{i % 3}", big - i, overwrite=True)
        i += 1
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.17, 0.33])
def test_external_sigkill_during_large_writes(tmp_path, delay):
    store = LogitStore.create(tmp_path / "s", np.arange(20000), np.arange(20000) % 300, list(range(300)), n_folds=2)
    keep = np.random.default_rng(1).normal(size=(20000, 300)).astype("float32")
    store.put("keep", keep)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store.path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    reopened = LogitStore(store.path)
    reopened.verify()
    np.testing.assert_array_equal(reopened.oof("keep"), keep)
    if "victim" in reopened.models():
        i = reopened.entry("victim").meta["i"]
        assert reopened.oof("victim")[0, 0] == pytest.approx(
            np.random.default_rng(0).normal(size=(20000, 300)).astype("float32")[0, 0] + i)
