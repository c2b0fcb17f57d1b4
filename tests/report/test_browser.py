"""The report as a real browser shows it: headless Chromium loads ``report.html`` from ``file://``,
takes a screenshot that must not be blank, and logs no console message (the page has no script: any
message is an error, e.g. a broken embedded image or markup the browser rejects).

Without Chromium (``/usr/bin/chromium``, or ``$ENSEMBLE_KIT_CHROMIUM``) the tests skip, unless
``ENSEMBLE_KIT_REQUIRE_BROWSER=1`` (CI): then they fail. Debian: ``apt-get install -y chromium``.
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ensemble_kit import LogitStore
from ensemble_kit.data import ArrayImageSource
from ensemble_kit.project import StackConfig, fit_stack
from ensemble_kit.report import SECTIONS, write_report

CHROMIUM = Path(os.environ.get("ENSEMBLE_KIT_CHROMIUM", "/usr/bin/chromium"))
WINDOW = (1200, 3000)


@pytest.fixture(scope="module")
def chromium() -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM} (Debian: apt-get install -y chromium)"
    if os.environ.get("ENSEMBLE_KIT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ENSEMBLE_KIT_REQUIRE_BROWSER=1 but {message}")
    pytest.skip(message)


def render(chromium: Path, page: Path, tmp: Path) -> tuple[np.ndarray, list[str]]:
    """Screenshot of ``page`` (RGB pixels) and every console message Chromium logged for it."""
    shot = tmp / "screenshot.png"
    profile = tmp / "profile"
    run = subprocess.run(
        [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr",
         "--v=0", f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": str(tmp)})
    assert shot.is_file(), f"Chromium wrote no screenshot (exit {run.returncode}): {run.stderr[-3000:]}"
    # console messages: "[...:INFO:CONSOLE:12] "msg", source: file:///... (12)" (older: CONSOLE(12))
    console = [line for line in run.stderr.splitlines() if re.search(r":CONSOLE[:(]|Uncaught", line)]
    return np.asarray(Image.open(shot).convert("RGB")), console


def is_blank(pixels: np.ndarray) -> bool:
    """One colour nearly everywhere: nothing (or almost nothing) was drawn."""
    gray = pixels.astype(np.float64).mean(axis=2)
    return gray.std() < 8.0 or (np.abs(gray - np.median(gray)) > 16).mean() < 0.01


def test_the_checks_catch_a_blank_page_and_a_console_error(chromium, tmp_path):
    """The checks below are live: they see a script error, a console error and an empty page."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("boom"); undefinedFn();</script>'
                   "</body></html>")
    pixels, console = render(chromium, bad, tmp_path / "bad")
    assert any('"boom"' in line for line in console) and any("Uncaught ReferenceError" in line for line in console)
    assert is_blank(pixels)  # one short line of text on a white page
    assert is_blank(np.full((300, 300, 3), 255))
    assert not is_blank(np.random.default_rng(0).integers(0, 256, (300, 300, 3)))


@pytest.fixture
def report(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(120) % 4
    classes = ["ok", "$x^$", "a_b%", "<stain>"]  # names are data: drawn and escaped as written
    store = LogitStore.create(tmp_path / "s", [f"img{i:03d}" for i in range(120)], [classes[k] for k in y],
                              classes=classes, n_folds=3, test_ids=np.arange(20))
    for i in range(3):
        store.put(f"m{i}", np.eye(4)[y] * (1 + i) + rng.normal(size=(120, 4)) * 1.5, rng.normal(size=(20, 4)))
    fit_stack(store, StackConfig(recipe="average", metric="accuracy"))  # its class offsets are rejected
    images = ArrayImageSource(rng.integers(0, 255, size=(120, 24, 24, 3), dtype=np.uint8), ids=store.train_ids)
    return write_report(store, images=images)


def test_the_report_renders_in_a_browser(chromium, report, tmp_path):
    page = report.read_text()
    assert [s for s in re.findall(r'<section id="([a-z-]+)">', page)] == list(SECTIONS)
    # self-contained: nothing is fetched, every image is an embedded PNG that decodes
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'<(link|script|iframe)\b|url\(|href="(?!#)', page)
    for source in sources:
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()
    pixels, console = render(chromium, report, tmp_path)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    assert not is_blank(pixels), "the screenshot of the report is blank"
    assert console == [], console
    # the top of the page holds the leaderboard figure: colour (blue bars), not only text
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 120)
    assert blue.mean() > 0.002
