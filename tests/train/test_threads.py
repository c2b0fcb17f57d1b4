"""CPU threads: the rule (mocked core counts and load), the log line, cpu_threads, and what a fold really uses."""

from __future__ import annotations

import logging

import pytest

from ensemble_kit import LogitStore
from ensemble_kit.train import TrainConfig, train_cv
from ensemble_kit.train import _threads
from ensemble_kit.train._threads import (
    _cgroup_quota,
    available_cpus,
    busy_cpus_elsewhere,
    choose_threads,
    local_worker_threads,
    set_worker_threads,
)
from ensemble_kit.train.trainer import _FoldRun
from helpers import tiny_image_data

BASE = {"model": "plain_cnn", "img_size": 16, "epochs": 1, "batch_size": 16, "seed": 0, "optimizer": {"lr": 0.01},
        "augment": {"random_resized_crop": False}}


@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cpus`` CPUs of which other processes keep ``busy`` busy (both settable)."""
    state = {"cpus": 8, "busy": 0.0}
    monkeypatch.setattr(_threads, "available_cpus", lambda: (state["cpus"], "CPU affinity"))
    monkeypatch.setattr(_threads, "busy_cpus_elsewhere", lambda *a, **k: state["busy"])
    monkeypatch.setitem(_threads._load, "at", None)
    monkeypatch.setattr(_threads, "LOAD_MAX_AGE", -1.0)  # measure at every choice
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    set_worker_threads(None)
    yield state
    set_worker_threads(None)


def test_one_process_takes_the_cpus_it_may_use_less_those_other_work_keeps_busy(machine):
    assert choose_threads(None).torch == 8 and choose_threads(None).blas == 8
    assert choose_threads(None).describe() == ("CPU threads: torch 8, BLAS 8 (8 CPUs available to this process "
                                               "(CPU affinity), 0.0 busy with other work)")
    machine["busy"] = 3.2  # 4.8 free: rounded
    assert choose_threads(None).torch == 5
    machine["busy"] = 7.9  # never fewer than one
    assert choose_threads(None).torch == 1
    machine["cpus"], machine["busy"] = 2, 2.0  # the 2-core machine shared with other work: one thread
    assert choose_threads(None).torch == 1


def test_cpu_threads_and_omp_num_threads_override(machine, monkeypatch):
    machine["busy"] = 7.0
    assert choose_threads(3).torch == 3 and choose_threads(3).blas == 3
    assert "cpu_threads: 3 in the config" in choose_threads(3).describe()
    monkeypatch.setenv("OMP_NUM_THREADS", "6")  # set by the user, or by Dask/Ray for their workers
    assert choose_threads(None).torch == 6 and "OMP_NUM_THREADS=6" in choose_threads(None).reason
    assert choose_threads(2).torch == 2


def test_local_workers_share_the_free_cpus(machine):
    assert local_worker_threads(3).torch == 2  # 8 // 3
    assert local_worker_threads(16).torch == 1
    machine["busy"] = 4.0
    assert local_worker_threads(2).torch == 2  # 4 free // 2
    set_worker_threads(local_worker_threads(2))  # what a local:2 worker does when it starts
    machine["busy"] = 0.0  # a worker does not measure again (its siblings would count as other work)
    choice = choose_threads(None)
    assert choice.torch == 2 and "shared by 2 local worker processes" in choice.reason
    assert choose_threads(5).torch == 5  # cpu_threads still overrides


def test_cgroup_quota_caps_the_cpus(tmp_path, monkeypatch):
    (tmp_path / "cg").write_text("0::/job\n")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(tmp_path, tmp_path / "cg") == 2  # 1.5 CPUs, rounded up
    (tmp_path / "job" / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path, tmp_path / "cg") is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert _cgroup_quota(v1, tmp_path / "missing") == 3
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(_threads, "_cgroup_quota", lambda: 3)
    assert available_cpus() == (3, "cgroup CPU quota; 16 by CPU affinity")


def test_other_processes_cpu_use_is_read_from_proc_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    # cpu0 busy the whole window (10 jiffies user), cpu1 idle; cpu2 is outside the affinity mask
    stat.write_text("cpu  0 0 0 0\ncpu0 100 0 0 100 0 0 0 0 0 0\ncpu1 50 0 0 150\ncpu2 0 0 0 0\n")

    def sleep(_):
        stat.write_text("cpu  0 0 0 0\ncpu0 110 0 0 100 0 0 0 0 0 0\ncpu1 50 0 0 160\ncpu2 99 0 0 0\n")

    ticks = iter([0.0, 0.2])
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    busy = busy_cpus_elsewhere(0.2, stat=stat, clock=lambda: next(ticks), sleep=sleep)
    assert busy == pytest.approx(1.0, abs=0.05)
    assert busy_cpus_elsewhere(0.2, stat=tmp_path / "missing") is None


def _store(tmp_path):
    train, test, _ = tiny_image_data()
    store = LogitStore.create(tmp_path / "store", train.ids, train.labels, [0, 1, 2], n_folds=2, seed=0,
                              test_ids=test.ids)
    return store, train, test


def _record_threads(monkeypatch):
    """torch's and BLAS's thread counts while each epoch of a fold trains."""
    import torch
    from threadpoolctl import threadpool_info

    seen = []
    original = _FoldRun.train_epoch

    def train_epoch(self, *args):
        blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        seen.append((torch.get_num_threads(), blas))
        return original(self, *args)

    monkeypatch.setattr(_FoldRun, "train_epoch", train_epoch)
    return seen


def test_a_fold_trains_with_the_chosen_threads_logs_them_and_restores_them(tmp_path, machine, monkeypatch, caplog):
    import torch

    before = torch.get_num_threads()
    machine["cpus"] = before + 1  # differs from what the process has, so the fold must set it
    seen = _record_threads(monkeypatch)
    store, train, test = _store(tmp_path)
    with caplog.at_level(logging.INFO, logger="ensemble_kit"):
        train_cv(TrainConfig.from_dict(BASE), store, train, test, name="cnn", folds=[0])
    assert [t for t, _ in seen] == [before + 1]
    assert all(b == before + 1 for _, blas in seen for b in blas)
    lines = [r.getMessage() for r in caplog.records]
    assert f"model 1/1 cnn: CPU threads: torch {before + 1}, BLAS {before + 1} ({before + 1} CPUs available to " \
           "this process (CPU affinity), 0.0 busy with other work)" in lines
    assert torch.get_num_threads() == before
    # cpu_threads in the config overrides the rule
    seen.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ensemble_kit"):
        train_cv(TrainConfig.from_dict({**BASE, "cpu_threads": 1}), store, train, test, name="cnn1", folds=[0])
    assert [t for t, _ in seen] == [1] and all(b == 1 for _, blas in seen for b in blas)
    assert any(line.endswith("CPU threads: torch 1, BLAS 1 (cpu_threads: 1 in the config)")
               for line in (r.getMessage() for r in caplog.records))
    assert torch.get_num_threads() == before


class _Killed(Exception):
    pass


def test_a_resumed_fold_keeps_the_threads_its_first_epochs_had(tmp_path, machine, monkeypatch, caplog):
    store, train, test = _store(tmp_path)
    cfg = TrainConfig.from_dict({**BASE, "epochs": 2})
    original_save = _FoldRun.save

    def save_then_die(self, parts, progress):
        path = original_save(self, parts, progress)
        raise _Killed
    monkeypatch.setattr(_FoldRun, "save", save_then_die)
    machine["cpus"] = 1
    with pytest.raises(_Killed):
        train_cv(cfg, store, train, test, name="cnn", folds=[0])
    assert [p.name for p in (store.path / "runs" / "cnn" / "fold0").glob("epoch_*")] == ["epoch_0001"]
    monkeypatch.setattr(_FoldRun, "save", original_save)
    machine["cpus"] = 3  # the machine looks different now; the fold goes on as it started
    seen = _record_threads(monkeypatch)
    with caplog.at_level(logging.INFO, logger="ensemble_kit"):
        train_cv(cfg, store, train, test, name="cnn", folds=[0])
    assert [t for t, _ in seen] == [1]
    lines = [r.getMessage() for r in caplog.records]
    assert "model 1/1 cnn, fold 1/2 (id 0): resumed after epoch 1/2" in lines
    assert "model 1/1 cnn, fold 1/2 (id 0): CPU threads: torch 1, BLAS 1 (as before this fold's resume; set " \
           "cpu_threads to choose)" in lines
