"""One registry type for every swappable part (metrics, ensemblers, recipes, meta-learner
backends, losses, augmentation policies, model factories).

A registry is the single source of the names a part accepts: config validation, CLI
``choices``, help texts and the docs tables are all derived from it. Registration rules are the
same everywhere: a name is registered once; registering it again is an error unless
``replace=True`` says so.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from ensemble_kit.errors import ValidationError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named parts of one kind.

    Examples
    --------
    >>> losses = Registry("loss")
    >>> @losses.register("mse")
    ... def mse(a, b):
    ...     '''Mean squared error.'''
    ...     return ((a - b) ** 2).mean()
    >>> losses.names(), losses.summary("mse")
    (['mse'], 'Mean squared error.')
    >>> losses.get("mes")
    Traceback (most recent call last):
    ...
    ensemble_kit.errors.ValidationError: Unknown loss 'mes'; did you mean 'mse'? Registered: ['mse'].
    """

    def __init__(self, kind: str, *, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        # modules that register the built-in parts, imported on the first lookup (so defining
        # the registry stays cheap and the parts' heavy imports wait until a part is used)
        self._builtin_modules = builtin_modules

    def _load_builtins(self) -> None:
        if self._builtin_modules:
            modules, self._builtin_modules = self._builtin_modules, ()
            for module in modules:
                importlib.import_module(module)

    @overload
    def register(self, name: str, obj: None = None, *, replace: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> T | Callable[[T], T]:
        """Register ``obj`` under ``name`` (or use as a decorator when ``obj`` is omitted)."""
        if not isinstance(name, str) or not name:
            raise ValidationError(f"A {self.kind} name must be a non-empty string; got {name!r}.")

        def add(item: T) -> T:
            if name in self._items and self._items[name] is not item and not replace:
                raise ValidationError(
                    f"A {self.kind} named {name!r} is already registered ({_describe(self._items[name])}). Pass "
                    "replace=True to replace it, or choose another name."
                )
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The part registered under ``name``; an unknown name suggests the closest ones."""
        self._load_builtins()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), self.names(), n=3)
            hint = f" did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValidationError(f"Unknown {self.kind} {name!r};{hint} Registered: {self.names()}.") from None

    def check(self, name: object, *, key: str) -> str:
        """``name`` if registered, else a :class:`ValidationError` naming the config ``key``."""
        self._load_builtins()
        if not isinstance(name, str) or name not in self._items:
            try:
                self.get(name)  # type: ignore[arg-type]
            except ValidationError as exc:
                raise ValidationError(f"Config key {key!r}: {exc}") from None
        return name  # type: ignore[return-value]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load_builtins()
        return sorted(self._items)

    def summary(self, name: str) -> str:
        """First line of the part's docstring: the one-line help the CLI and the docs show."""
        item = self.get(name)
        doc = getattr(item, "help", None) or getattr(item, "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _describe(item: object) -> str:
    return getattr(item, "__qualname__", None) or getattr(item, "name", None) or type(item).__name__
