"""Names that become paths, and paths that never leave their root.

Every name ensemble_kit turns into a file or folder name (store entries, saved stacks, project
models, training runs, bundles) goes through :func:`check_name`, before anything is written.
Every folder it writes into or deletes from inside a store or bundle is reached through
:func:`safe_dir`, which refuses a component that is a symbolic link or not a folder, so a folder
received from someone else cannot redirect a write or a clean-up outside of it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from ensemble_kit.errors import UnsafePathError, ValidationError

__all__ = ["NAME_PATTERN", "case_collision", "check_name", "safe_dir"]

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@+=,-]{0,127}"
_NAME_RE = re.compile(NAME_PATTERN)
# Device names Windows refuses as file names, whatever the extension.
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def check_name(name: object, *, what: str = "entry name", example: str = "convnext_atto@224") -> str:
    """Return ``name`` if it is safe as one file-name component on every OS, else raise.

    1-128 characters of letters, digits and ``_ . @ + = , -``, starting with a letter or digit,
    not ending in ``.``, and not a Windows device name. The whole string must match (a
    trailing newline is refused).

    Examples
    --------
    >>> check_name("convnext_atto@224")
    'convnext_atto@224'
    >>> check_name("../x", what="stack name")
    Traceback (most recent call last):
    ...
    ensemble_kit.errors.ValidationError: Invalid stack name '../x': ...
    """
    if (not isinstance(name, str) or _NAME_RE.fullmatch(name) is None or name.endswith(".")
            or name.split(".")[0].lower() in _WINDOWS_RESERVED):
        raise ValidationError(
            f"Invalid {what} {name!r}: use 1-128 letters, digits and '_ . @ + = , -', starting with a letter or "
            f"digit and not ending in '.' (e.g. {example!r}). Names become file names, so path separators, "
            "'..', spaces and control characters are refused."
        )
    return name


def case_collision(name: str, existing: Iterable[str]) -> str | None:
    """The name among ``existing`` that differs from ``name`` only in case, if any.

    Such names share one folder on case-insensitive file systems (macOS, Windows), so a store
    made on Linux would silently merge them there.
    """
    folded = name.casefold()
    return next((other for other in existing if other != name and other.casefold() == folded), None)


def safe_dir(root: Path, *parts: str, create: bool = False) -> Path:
    """``root / parts...``, checking every existing component below ``root`` is a real folder.

    With ``create=True`` missing folders are made (one component at a time, each checked).
    Raises :class:`UnsafePathError` naming the first component that is a link or not a folder.
    """
    path = Path(root)
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise UnsafePathError(f"{part!r} is not a single folder name (under {str(path)!r}).", path=path / part)
        path = path / part
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if not create:
                continue
            try:
                path.mkdir()
            except FileExistsError:  # another process made it first; checked below
                pass
            info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            raise UnsafePathError(f"{str(path)!r} is a symbolic link; ensemble_kit never writes, reads or deletes "
                                  "through links inside a store. Replace it with a real folder.", path=path)
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafePathError(f"{str(path)!r} should be a folder but is not (mode "
                                  f"{stat.filemode(info.st_mode)}).", path=path)
    return path
