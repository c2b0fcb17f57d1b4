"""Training progress off a terminal: time-based lines with the command's position and ETA (fake clock)."""

from __future__ import annotations

import logging

import pytest

from ensemble_kit._progress import TrainProgress, bars_off, format_eta


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog):
    with bars_off(), caplog.at_level(logging.INFO, logger="ensemble_kit"):
        yield lambda: [r.getMessage() for r in caplog.records if r.name == "ensemble_kit._progress"]


def test_a_line_at_least_every_interval_inside_an_epoch_and_never_more_often(lines):
    clock = FakeClock()
    run = TrainProgress(["cnn"], clock=clock, interval=30.0)
    run.plan("cnn", {0: 1000})
    run.start_model("cnn")
    run.start_fold(0, 5, n_epochs=2, first_epoch=0, images_per_epoch=500)
    run.start_epoch(0, 50)
    emitted_at = []
    for b in range(1, 51):  # 4 s and 10 images per batch
        clock.now += 4.0
        before = len(lines())
        run.batch(b, 10)
        if len(lines()) > before:
            emitted_at.append(clock.now)
    # the first line once 30 s have passed (at 32 s), then each 30 s or more after the last one
    assert emitted_at == [32.0, 64.0, 96.0, 128.0, 160.0, 192.0]
    assert all(later - earlier <= 30.0 + 4.0 for earlier, later in zip([0.0, *emitted_at], emitted_at + [200.0]))
    # at 32 s: 80 images trained in 32 s (0.4 s per image), 920 left -> 368 s
    assert lines()[0] == "model 1/1 cnn, fold 1/5 (id 0), epoch 1/2, batch 8/50, 2.5 img/s, ETA 00:06:08"
    # the epoch's end always gets its line, and the interval restarts from it
    run.end_epoch("train loss 0.5000")
    assert lines()[-1].endswith("epoch 1/2, batch 50/50, 2.5 img/s, ETA 00:03:20: train loss 0.5000")
    n = len(lines())
    clock.now += 29.0
    run.heartbeat("test predictions, batch 2/9")
    assert len(lines()) == n
    clock.now += 1.0
    run.heartbeat("test predictions, batch 3/9")
    assert lines()[-1].startswith("model 1/1 cnn, fold 1/5 (id 0), epoch 1/2, test predictions, batch 3/9, 2.5 img/s")


def test_the_eta_prices_models_not_started_at_the_speed_so_far_and_each_model_at_its_own():
    clock = FakeClock()
    run = TrainProgress(["slow", "fast"], clock=clock, interval=1e9)
    run.plan("slow", {0: 100})
    run.plan("fast", {0: 200, 1: 100})
    assert run.eta_seconds() is None and run.speed_eta() == "- img/s, ETA --:--:--"
    run.start_model("slow")
    run.start_fold(0, 2, n_epochs=1, first_epoch=0, images_per_epoch=100)
    run.start_epoch(0, 1)
    clock.now = 50.0
    run.batch(1, 100)  # 0.5 s per image
    run.end_fold()
    assert run.eta_seconds() == pytest.approx(300 * 0.5)
    run.start_model("fast")
    assert run.position() == "model 2/2 fast"
    run.start_fold(1, 2, n_epochs=2, first_epoch=1, images_per_epoch=50)  # resumed: one epoch of 50 left
    run.start_epoch(1, 5)
    clock.now = 60.0
    run.batch(1, 10)  # this model: 10 images in 10 s -> 1 s per image; fold 0's 200 + 40 left
    assert run.eta_seconds() == pytest.approx(240 * 1.0)
    assert run.position() == "model 2/2 fast, fold 2/2 (id 1), epoch 2/2"


def test_a_worker_reports_its_place_among_the_commands_models_and_its_tasks_eta():
    run = TrainProgress(["b"], n_models=3, first=2, scope="for this fold task", clock=FakeClock())
    run.start_model("b")
    assert run.position() == "model 2/3 b" and run.speed_eta().endswith("ETA --:--:-- for this fold task")


def test_eta_format():
    assert [format_eta(s) for s in (0, 59.6, 3600, 400_000, None, float("inf"))] == \
        ["00:00:00", "00:01:00", "01:00:00", "111:06:40", "--:--:--", "--:--:--"]
