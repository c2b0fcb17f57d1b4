"""Progress that shows wherever the library runs: bars in terminals and notebooks, log lines elsewhere.

tqdm's ``disable=None`` turns a bar off whenever the output is not a terminal, which includes
Jupyter and Kaggle notebooks (their output stream is not a tty) and every log file. Here a bar
is shown in a terminal or a notebook kernel; elsewhere the bar is off and the code that drives
it logs one line per epoch, fold or stage instead (see :func:`interactive`). ``quiet(True)``
(the CLI's ``-q``) turns bars off everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["interactive", "progress", "quiet", "bars_off"]

T = TypeVar("T")
_state = {"quiet": False}


def quiet(value: bool = True) -> None:
    """Turn progress bars off (``True``) or back on, for the whole process."""
    _state["quiet"] = bool(value)


@contextmanager
def bars_off() -> Iterator[None]:
    """No bars while the block runs (code logs lines instead), as before afterwards."""
    previous = _state["quiet"]
    _state["quiet"] = True
    try:
        yield
    finally:
        _state["quiet"] = previous


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell is not None else None
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


def interactive() -> bool:
    """Whether a progress bar is visible here: a terminal or a Jupyter/Kaggle notebook kernel."""
    if _state["quiet"]:
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or _in_notebook()


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, leave: bool = True, **options: Any) -> Any:
    """A tqdm bar over ``iterable`` when :func:`interactive`, else the iterable with a disabled bar."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=not interactive(), **options)
