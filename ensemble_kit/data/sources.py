"""Image sources: where images and labels come from (arrays, class folders, Kaggle CSVs).

A source exposes ``ids`` (unique), ``labels`` (each one of ``classes``, or ``None`` when
unlabelled), ``targets`` (the same as class indices), ``classes`` and ``load(i)`` returning an ``(H, W, 3)`` uint8 RGB array; grayscale and RGBA
inputs are converted. Bad input is refused at construction with the offending entries listed.

Folder sources (:class:`ImageFolderSource`, :class:`ImageDirSource`) read every entry whose name
has an image extension (:data:`IMAGE_EXTENSIONS`) or refuse the folder: none is skipped
silently. A regular file is read; a symbolic link to a regular file is read through the link when
its target lies inside the source's root (links that dedupe or rearrange a dataset keep working);
a dangling link, a link leaving the root, a FIFO, a socket, a device or a folder named like an
image is a :class:`~ensemble_kit.errors.ImageDecodeError` listing the offending paths, raised at
construction, before any image is decoded or any model loaded. So a folder received from
elsewhere cannot make ensemble_kit read a file outside it, block on a pipe, or lose images.
"""

from __future__ import annotations

import logging
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ensemble_kit.data.decode import check_image_header, decode_image, file_kind, to_rgb
from ensemble_kit.errors import ImageDecodeError, ValidationError
from ensemble_kit.store._tables import load_table

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageSource(ABC):
    """Base class: ids, optional labels, classes, ``load(i)``.

    ``labels`` holds class values (``LogitStore.create(y=src.labels, classes=src.classes)``
    works as is); ``targets`` holds the same labels as indices into ``classes``.
    """

    def __init__(self, ids: ArrayLike, targets: NDArray[np.int64] | None, classes: Sequence[Any], *, cache: bool) -> None:
        self.ids = np.asarray(ids)
        self.targets = targets
        self.classes = list(classes)
        self.cache = cache
        self._cache: dict[int, NDArray[np.uint8]] = {}
        _check_unique(self.ids, type(self).__name__)

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> NDArray[np.uint8]:
        """The image at ``index`` as ``(H, W, 3)`` uint8 (decoded once when ``cache=True``)."""
        if self.cache and index in self._cache:
            return self._cache[index]
        image = self._load(index)
        if self.cache:
            self._cache[index] = image
        return image

    @abstractmethod
    def _load(self, index: int) -> NDArray[np.uint8]: ...

    def check(self) -> None:
        """Cheap check that every image can be loaded (file sources read each header); raises one
        :class:`ImageDecodeError` listing every bad file. Run before training starts."""

    @property
    def labels(self) -> NDArray | None:
        """Class value of every sample (``classes[targets]``), or ``None`` when unlabelled."""
        if self.targets is None:
            return None
        values = np.empty(len(self.classes), dtype=object)
        values[:] = self.classes
        out = values[self.targets]
        return out.astype(type(self.classes[0])) if self.classes and isinstance(self.classes[0], (int, str)) else out

    @property
    def is_labelled(self) -> bool:
        return self.targets is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, classes={len(self.classes)}, labelled={self.is_labelled})"


class ArrayImageSource(ImageSource):
    """Images held in memory.

    Parameters
    ----------
    images : array-like of shape (N, H, W), (N, H, W, 1|3|4)
        uint8, or floats in [0, 1].
    labels : array-like of shape (N,), optional
        Labels, each one of ``classes`` (default classes: the sorted unique labels).
    ids : array-like, optional
        Sample ids (default ``0..N-1``).

    Examples
    --------
    >>> import numpy as np
    >>> src = ArrayImageSource(np.zeros((4, 8, 8), np.uint8), ["a", "b", "a", "b"])
    >>> src.load(0).shape, src.targets.tolist(), src.labels.tolist(), src.classes
    ((8, 8, 3), [0, 1, 0, 1], ['a', 'b', 'a', 'b'], ['a', 'b'])
    """

    def __init__(self, images: ArrayLike, labels: ArrayLike | None = None, *, ids: ArrayLike | None = None,
                 classes: Sequence[Any] | None = None) -> None:
        self._images = np.asarray(images)
        if self._images.ndim not in (3, 4):
            raise ValidationError(f"images must be (N, H, W) or (N, H, W, C); got shape {self._images.shape}.")
        n = len(self._images)
        label_index, class_list = _encode_labels(labels, classes, n, where="ArrayImageSource")
        super().__init__(np.arange(n) if ids is None else ids, label_index, class_list, cache=False)
        if len(self.ids) != n:
            raise ValidationError(f"ids has {len(self.ids)} entries for {n} images.")

    def _load(self, index: int) -> NDArray[np.uint8]:
        return to_rgb(self._images[index])


class _FileImageSource(ImageSource):
    def __init__(self, ids, paths: list[Path], labels, classes, *, cache: bool) -> None:
        super().__init__(ids, labels, classes, cache=cache)
        self.paths = paths
        self._checked = False
        unusable = [(p, problem) for p in paths if (problem := _file_problem(p)) is not None]
        if unusable:
            listed = ", ".join(f"{str(p)!r} ({problem})" for p, problem in unusable[:_LISTED])
            more = f" and {len(unusable) - _LISTED} more" if len(unusable) > _LISTED else ""
            raise ImageDecodeError(
                f"{type(self).__name__}: {len(unusable)} image file(s) not found or not regular files: {listed}{more}. "
                "Check the paths, and replace anything that is not an image file with the file itself."
            )

    def _load(self, index: int) -> NDArray[np.uint8]:
        try:
            return decode_image(self.paths[index])
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"{exc} (id {self.ids[index]!r})") from exc

    def check(self) -> None:
        """Read every file's header (not its pixels); raises one error listing every bad file."""
        if self._checked:
            return
        _raise_all(self._problems(check_image_header), what="image file(s) cannot be used")
        self._checked = True

    def validate(self) -> None:
        """Decode every image once; raises listing every file that cannot be decoded."""
        _raise_all(self._problems(decode_image), what="image(s) cannot be decoded")

    def _problems(self, probe: Any) -> list[str]:
        bad = []
        for path in self.paths:
            try:
                probe(path)
            except ImageDecodeError as exc:
                bad.append(str(exc))
        return bad


class ImageFolderSource(_FileImageSource):
    """``root/<class>/<image>`` layout (torchvision ImageFolder).

    Ids are ``<class>/<file>`` (``ids="path"``), or the file names without extension
    (``ids="stem"``, what a competition's id column holds; refused when two class folders hold
    the same file name), or ``ids="auto"``: the file names when they are unique, else paths.

    Every entry of a class folder named like an image is read, or the folder is refused (see the
    module notes): a dangling link, a link leaving ``root``, a FIFO, a socket or a folder named
    ``x.jpg`` is an :class:`ImageDecodeError` listing the paths. So is an entry named like an
    image directly under ``root`` (an image outside every class folder, or a folder ``x.jpg``
    where class folders are expected), and a class folder that is a link leaving ``root``. A link
    to a regular file (or a class folder) inside ``root`` is followed.

    Parameters
    ----------
    root : path
    classes : sequence of str, optional
        Class folder names in column order (default: sorted folder names).
    cache : bool
        Keep decoded images in RAM.
    ids : {"path", "stem", "auto"}
    """

    def __init__(self, root: str | Path, *, classes: Sequence[str] | None = None, cache: bool = False,
                 ids: str = "path") -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValidationError(f"ImageFolderSource: {str(root)!r} is not a directory.")
        if ids not in ("path", "stem", "auto"):
            raise ValidationError(f"ImageFolderSource: ids must be 'auto', 'stem' or 'path'; got {ids!r}.")
        real_root = os.path.realpath(root)
        folders, stray = _class_folders(root, real_root)
        problems = list(stray)
        class_list = list(classes) if classes is not None else folders
        paths, labels = [], []
        for index, name in enumerate(class_list):
            files, bad = _image_entries(root / name, real_root) if name in folders else ([], [])
            problems += bad
            paths += files
            labels += [index] * len(files)
        hint = (f" A folder holding sub-folders is read as one folder per class{f' ({folders[:5]})' if folders else ''}: "
                "entries named like images belong inside a class folder.") if stray else ""
        _refuse_entries(problems, where=f"ImageFolderSource({str(root)!r})", hint=hint)
        unknown = sorted(set(folders) - set(class_list))
        if unknown:
            raise ValidationError(f"ImageFolderSource: folders {unknown} are not in classes {class_list}.")
        if not paths:
            raise ValidationError(f"ImageFolderSource: no images with extensions {IMAGE_EXTENSIONS} under {str(root)!r}.")
        stems = pd.Index([p.stem for p in paths])
        if ids == "auto":  # a competition's ids when they can be, else unambiguous paths
            ids = "path" if stems.has_duplicates else "stem"
        if ids == "stem":
            if stems.has_duplicates:
                clash = sorted(set(stems[stems.duplicated()]))[:3]
                examples = [f"{p.parent.name}/{p.name}" for p in paths if p.stem in clash][:4]
                raise ValidationError(
                    f"ImageFolderSource({str(root)!r}): file names are not unique across class folders ({examples}), "
                    "so they cannot be the ids; use ids='path' (data.test_ids: path) for '<class>/<file>' ids.")
            id_list = stems.tolist()
        else:
            id_list = [f"{p.parent.name}/{p.name}" for p in paths]
        super().__init__(id_list, paths, np.asarray(labels, dtype=np.int64), class_list, cache=cache)


class CsvImageSource(_FileImageSource):
    """A CSV of ids (and labels) plus an image directory: the usual Kaggle layout.

    Parameters
    ----------
    csv : path or DataFrame
    image_dir : path
    id_col : str
        Column with the image id (file name, with or without extension).
    label_col : str, optional
        Column with the label; omit for an unlabelled (test) set.
    ext : str, optional
        Extension appended to ids that have none (e.g. ``".png"``).
    classes : sequence, optional
        Class labels in column order (default: sorted unique labels).
    cache : bool
    """

    def __init__(self, csv: str | Path | pd.DataFrame, image_dir: str | Path, *, id_col: str = "id",
                 label_col: str | None = None, ext: str | None = None, classes: Sequence[Any] | None = None,
                 cache: bool = False) -> None:
        frame = csv if isinstance(csv, pd.DataFrame) else pd.read_csv(csv)
        where = f"CsvImageSource({csv if not isinstance(csv, pd.DataFrame) else 'DataFrame'})"
        wanted = [id_col] + ([label_col] if label_col else [])
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ValidationError(f"{where}: missing column(s) {missing}; columns are {list(frame.columns)}.")
        ids = frame[id_col].astype(str).to_numpy()
        image_dir = Path(image_dir)
        paths = [image_dir / (i if ext is None or Path(i).suffix else f"{i}{ext}") for i in ids]
        labels = frame[label_col].to_numpy() if label_col else None
        label_index, class_list = _encode_labels(labels, classes, len(ids), where=where)
        if label_col is None and classes is not None:
            class_list = list(classes)
        super().__init__(ids, paths, label_index, class_list, cache=cache)


class ImageDirSource(_FileImageSource):
    """Every image directly inside one folder, unlabelled (a competition's ``test/`` folder).

    Ids are the file names without extension, in sorted order. Every entry named like an image
    is read, or the folder is refused (see the module notes): a dangling link, a link leaving
    ``root``, a FIFO, a socket or a folder named ``x.jpg`` is an :class:`ImageDecodeError`
    listing the paths. A link to a regular file inside ``root`` is read through the link (its
    id is the link's name).

    Parameters
    ----------
    root : path
    classes : sequence, optional
        The training classes, so the source can be paired with a labelled one.
    cache : bool

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("TEST_001.jpg", "TEST_000.png"):
    ...     Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / name)
    >>> src = ImageDirSource(folder, classes=["a", "b"])
    >>> src.ids.tolist(), src.is_labelled, src.load(0).shape
    (['TEST_000', 'TEST_001'], False, (8, 8, 3))
    """

    def __init__(self, root: str | Path, *, classes: Sequence[Any] | None = None, cache: bool = False) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValidationError(f"ImageDirSource: {str(root)!r} is not a directory.")
        paths, problems = _image_entries(root, os.path.realpath(root))
        _refuse_entries(problems, where=f"ImageDirSource({str(root)!r})")
        if not paths:
            raise ValidationError(f"ImageDirSource: no images with extensions {IMAGE_EXTENSIONS} in {str(root)!r}.")
        stems = [p.stem for p in paths]
        if len(set(stems)) != len(stems):
            clash = sorted({s for s in stems if stems.count(s) > 1})
            raise ValidationError(f"ImageDirSource: file names differing only by extension in {str(root)!r}: {clash[:5]}.")
        super().__init__(stems, paths, None, list(classes) if classes is not None else [], cache=cache)


class ImagePathSource(_FileImageSource):
    """Images at explicit paths, unlabelled (e.g. a CSV listing the images to predict).

    Parameters
    ----------
    paths : sequence of path
    ids : sequence, optional
        One id per image (default: the file names without extension).
    classes : sequence, optional
        The training classes, so the source can be paired with a labelled one.
    """

    def __init__(self, paths: Sequence[str | Path], *, ids: Sequence[Any] | None = None,
                 classes: Sequence[Any] | None = None, cache: bool = False) -> None:
        paths = [Path(p) for p in paths]
        if not paths:
            raise ValidationError("ImagePathSource: no image paths given.")
        super().__init__([p.stem for p in paths] if ids is None else [str(i) for i in ids], paths, None,
                         list(classes) if classes is not None else [], cache=cache)

    @classmethod
    def from_csv(cls, csv: str | Path, *, path_col: str = "path", id_col: str | None = None,
                 classes: Sequence[Any] | None = None) -> ImagePathSource:
        """Paths from a CSV column (relative paths are relative to the CSV's folder)."""
        csv = Path(csv)
        frame = load_table(csv, what=f"image list {str(csv)!r}", id_col=id_col)
        if path_col not in frame.columns:
            raise ValidationError(f"{str(csv)!r}: no column {path_col!r}; columns are {list(frame.columns)[:20]}.")
        paths = [p if Path(p).is_absolute() else csv.parent / p for p in frame[path_col].astype(str)]
        return cls(paths, ids=None if id_col is None else frame[id_col].astype(str).tolist(), classes=classes)


class ConcatSource(ImageSource):
    """Several labelled sources in a row (e.g. original + pseudo-labelled samples)."""

    def __init__(self, *sources: ImageSource) -> None:
        if not sources:
            raise ValidationError("ConcatSource needs at least one source.")
        classes = sources[0].classes
        for s in sources[1:]:
            if s.classes != classes:
                raise ValidationError(f"ConcatSource: classes differ: {s.classes} vs {classes}.")
        if any(s.targets is None for s in sources):
            raise ValidationError("ConcatSource: every source must be labelled.")
        self._sources = sources
        self._offsets = np.cumsum([0] + [len(s) for s in sources])
        super().__init__(np.concatenate([s.ids.astype(str) for s in sources]),
                         np.concatenate([s.targets for s in sources]), classes, cache=False)

    def _load(self, index: int) -> NDArray[np.uint8]:
        part = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self._sources[part].load(index - int(self._offsets[part]))

    def check(self) -> None:
        for source in self._sources:
            source.check()


class SubsetSource(ImageSource):
    """Rows ``indices`` of a source, with optional replacement targets (class indices)."""

    def __init__(self, source: ImageSource, indices: ArrayLike, targets: ArrayLike | None = None) -> None:
        self._source = source
        self._indices = np.asarray(indices, dtype=np.int64)
        new_targets = (np.asarray(targets, dtype=np.int64) if targets is not None
                       else (source.targets[self._indices] if source.targets is not None else None))
        super().__init__(source.ids[self._indices], new_targets, source.classes, cache=False)

    def _load(self, index: int) -> NDArray[np.uint8]:
        return self._source.load(int(self._indices[index]))

    def check(self) -> None:
        self._source.check()


_LISTED = 5  # offending paths named in an error; the rest are counted


def _inside(path: str, real_root: str) -> bool:
    """Whether the resolved ``path`` is ``real_root`` or lies under it (both already resolved)."""
    return os.path.commonpath([path, real_root]) == real_root


def _entry_problem(path: Path, real_root: str, *, directory: bool = False) -> str | None:
    """Why ``path`` is not a regular file (``directory=True``: not a folder) inside ``real_root``;
    ``None`` when it is one. Links are followed only when they resolve inside ``real_root``; the
    entry itself is never opened."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "vanished while the folder was listed"
    link = ""
    if stat.S_ISLNK(info.st_mode):
        target = os.path.realpath(path)
        if not _inside(target, real_root):  # decided before touching the target
            return f"a symbolic link leaving {real_root!r}, to {target!r}"
        try:
            info = os.stat(path)
        except OSError:
            return f"a dangling symbolic link, to {os.readlink(path)!r}"
        link = "symbolic link to a "
    wanted = stat.S_ISDIR if directory else stat.S_ISREG
    if wanted(info.st_mode):
        return None
    return f"a {link}{file_kind(info.st_mode)}"


def _file_problem(path: Path) -> str | None:
    """Why an explicitly listed image path (a CSV's, a path list's) cannot be read, or ``None``."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "a dangling symbolic link" if os.path.islink(path) else "missing"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None if stat.S_ISREG(info.st_mode) else f"a {file_kind(info.st_mode)}"


def _image_entries(folder: Path, real_root: str) -> tuple[list[Path], list[str]]:
    """The entries of ``folder`` named like images, sorted: the readable ones, and a description
    of every other (see :func:`_entry_problem`). Entries with other extensions are not images and
    are left alone."""
    found, problems = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        problem = _entry_problem(path, real_root)
        if problem is None:
            found.append(path)
        else:
            problems.append(f"{str(path)!r} ({problem})")
    return found, problems


def _class_folders(root: Path, real_root: str) -> tuple[list[str], list[str]]:
    """The class folders of an ImageFolder ``root`` (sorted names), and a description of every
    entry that is refused: an image-named entry outside any class folder (a folder named like an
    image included: it is a stray entry of a flat folder far more often than a class), a link to
    a folder outside ``root``."""
    folders, problems = [], []
    for path in sorted(root.iterdir()):
        problem = _entry_problem(path, real_root, directory=True)
        if problem is None and path.suffix.lower() in IMAGE_EXTENSIONS:
            problems.append(f"{str(path)!r} (a directory named like an image, where class folders are expected)")
        elif problem is None:
            folders.append(path.name)
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            file_problem = _entry_problem(path, real_root) or "an image outside every class folder"
            problems.append(f"{str(path)!r} ({file_problem})")
        elif os.path.islink(path) and os.path.isdir(path):  # a class folder linked from outside the root
            problems.append(f"{str(path)!r} ({problem})")
    return folders, problems


def _refuse_entries(problems: list[str], *, where: str, hint: str = "") -> None:
    """One :class:`ImageDecodeError` naming the first few refused folder entries and counting the rest."""
    if not problems:
        return
    count = len(problems)
    listed = "; ".join(problems[:_LISTED])
    more = f"; and {count - _LISTED} more" if count > _LISTED else ""
    raise ImageDecodeError(
        f"{where}: {count} {'entry' if count == 1 else 'entries'} named like an image cannot be read as an image "
        f"file: {listed}{more}. Every entry with an image extension {list(IMAGE_EXTENSIONS)} is read or refused, "
        "never skipped: replace each with the image file itself (a link must point to a file inside the folder), "
        f"or remove it.{hint}"
    )


def _raise_all(problems: list[str], *, what: str) -> None:
    if problems:
        listed = "\n  - ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ImageDecodeError(f"{len(problems)} {what}:\n  - {listed}{more}")


def positions_of(ids: ArrayLike, source: ImageSource, *, what: str) -> NDArray[np.int64]:
    """Index into ``source`` of every id in ``ids``; the source must hold exactly those ids."""
    position = {str(s): i for i, s in enumerate(source.ids.tolist())}
    wanted = [str(s) for s in np.asarray(ids).tolist()]
    missing = [s for s in wanted if s not in position]
    extra = sorted(set(position) - set(wanted))
    if missing or extra:
        raise ValidationError(
            f"The {what} does not hold exactly the store's ids: {len(missing)} missing (e.g. {missing[:5]}), "
            f"{len(extra)} not in the store (e.g. {extra[:5]})."
        )
    return np.array([position[s] for s in wanted], dtype=np.int64)


def _check_unique(ids: NDArray, where: str) -> None:
    values, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        raise ValidationError(f"{where}: duplicate ids {values[counts > 1][:10].tolist()} ({int((counts > 1).sum())} in all).")


def _encode_labels(labels: ArrayLike | None, classes: Sequence[Any] | None, n: int, *, where: str):
    if labels is None:
        return None, list(classes) if classes is not None else []
    values = np.asarray(labels)
    if len(values) != n:
        raise ValidationError(f"{where}: {len(values)} labels for {n} images.")
    class_list = list(classes) if classes is not None else sorted(pd.unique(values).tolist())
    index = pd.Index(class_list).get_indexer(pd.Index(values.tolist()))
    if (index < 0).any():
        bad = sorted(set(values[index < 0].tolist()), key=str)[:10]
        raise ValidationError(f"{where}: labels {bad} are not in classes {class_list[:20]} ({int((index < 0).sum())} rows).")
    return index.astype(np.int64), class_list
