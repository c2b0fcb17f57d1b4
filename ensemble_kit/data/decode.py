"""Decoding image files into 8-bit RGB faithfully, or refusing them by name.

Every bit depth Pillow reads is scaled, never clipped: 16-bit PNG/TIFF (``I;16``) by
``1/257``, 32-bit integer TIFF (``I``) by its declared bits per sample, float TIFF (``F``) in
[0, 1] by 255. Images larger than :data:`MAX_PIXELS`, float images outside [0, 1] and modes
that have no faithful 8-bit form are an :class:`~ensemble_kit.errors.ImageDecodeError` naming
the file. :func:`check_image_header` reads only the header, so a whole dataset can be checked
in seconds before training starts.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from ensemble_kit.errors import ImageDecodeError

__all__ = ["MAX_PIXELS", "check_image_header", "decode_image", "file_kind", "to_rgb"]

# A decoded image of this many pixels is 3 x 128 MB: larger ones are refused before decoding
# (Pillow's own bomb guard warns at half of its 179 M limit and raises at the limit).
MAX_PIXELS = 128 * 1024 * 1024
_EIGHT_BIT_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa", "RGBX"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLE_FORMAT = 258, 339


def to_rgb(array: NDArray) -> NDArray[np.uint8]:
    """Grayscale ``(H, W)``/``(H, W, 1)``, RGB or RGBA (alpha dropped) -> ``(H, W, 3)`` uint8.

    uint8 passes as is; floats must be in [0, 1] (scaled by 255); uint16 is scaled by 1/257.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(f"An image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {a.shape}.")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[..., :3]
    if a.dtype == np.uint16:
        a = _scale(a, 65535)
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1 or not np.isfinite(a).all()):
            raise ImageDecodeError(f"Float images must hold values in [0, 1]; got [{np.nanmin(a):g}, {np.nanmax(a):g}].")
        a = _scale(a, 1.0)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def _scale(values: NDArray, full_scale: float) -> NDArray[np.uint8]:
    return np.clip(np.rint(values.astype(np.float64) * (255.0 / full_scale)), 0, 255).astype(np.uint8)


# Opened without blocking: a FIFO (or a device) planted where an image should be is refused
# after ``fstat``, never waited on. O_NONBLOCK does not change how a regular file is read.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _not_regular(path: Path, mode: int) -> ImageDecodeError:
    return ImageDecodeError(f"Image {str(path)!r} is not a regular file (mode {stat.filemode(mode)}, a "
                            f"{file_kind(mode)}). Replace it with the image file itself.")


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words ("regular file", "FIFO", "directory", ...)."""
    for test, kind in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symbolic link"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def _open_regular(path: Path) -> io.BufferedReader:
    """``path`` opened for reading if it is a regular file (a link to one is followed), else a named error.

    ``stat`` first, so a FIFO or a device is never even opened (opening some devices acts), then
    a non-blocking open and ``fstat`` of the descriptor itself, so a file swapped for a FIFO in
    between is refused too instead of blocking the process.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        dangling = " (a symbolic link to a missing file)" if os.path.islink(path) else ""
        raise ImageDecodeError(f"Image {str(path)!r} does not exist{dangling}.") from exc
    except OSError as exc:
        raise ImageDecodeError(f"Image {str(path)!r} cannot be opened: {exc.strerror or exc}.") from exc
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(path, info.st_mode)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"Image {str(path)!r} does not exist.") from exc
    except OSError as exc:  # ENXIO: a socket swapped in; EACCES: unreadable
        raise ImageDecodeError(f"Image {str(path)!r} cannot be opened: {exc.strerror or exc}.") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path, info.st_mode)
        if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """The image at ``path``, opened lazily (header only) from one descriptor, with its size and mode checked."""
    with _open_regular(path) as fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(fh)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(f"Image {str(path)!r} is too large to decode safely ({exc}).") from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ImageDecodeError(f"Cannot decode image {str(path)!r}: {exc}") from exc
        with image:
            width, height = image.size
            problem = None
            if width <= 0 or height <= 0:
                problem = f"has size {width}x{height}"
            elif width * height > MAX_PIXELS:
                problem = f"has {width}x{height} pixels, more than the {MAX_PIXELS:,} ensemble_kit decodes"
            elif image.mode not in _EIGHT_BIT_MODES | _SIXTEEN_BIT_MODES | {"I", "F"}:
                problem = f"has mode {image.mode!r}, which has no faithful 8-bit RGB form"
            if problem:
                raise ImageDecodeError(f"Image {str(path)!r} {problem}.")
            yield image


def check_image_header(path: str | os.PathLike[str]) -> None:
    """Check an image file without decoding its pixels: a regular file, a known format, a size and
    mode that :func:`decode_image` accepts. Raises :class:`ImageDecodeError` naming the file.

    A FIFO, socket, device or folder is refused without being opened (and never blocks); a
    symbolic link is followed (whether a link may point where it does is the sources' rule).
    """
    with _opened(Path(path)):
        pass


def _integer_bits(image: Image.Image) -> tuple[int, bool]:
    """Bits per sample and signedness of a 32-bit-integer (mode ``I``) image."""
    if image.format == "TIFF":
        tags = getattr(image, "tag_v2", {})
        bits = tags.get(_TIFF_BITS_PER_SAMPLE, (32,))
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        sample_format = tags.get(_TIFF_SAMPLE_FORMAT, (1,))
        signed = int(sample_format[0] if isinstance(sample_format, tuple) else sample_format) == 2
        return bits, signed
    # PNG (and others) store 16-bit grayscale that older Pillows open as mode "I"
    return 16, False


def decode_image(path: str | os.PathLike[str]) -> NDArray[np.uint8]:
    """The image at ``path`` as ``(H, W, 3)`` uint8 RGB, every bit depth scaled, never clipped."""
    path = Path(path)
    with _opened(path) as image:
        return _pixels(image, path)


def _pixels(image: Image.Image, path: Path) -> NDArray[np.uint8]:
    """Decode an opened image's pixels to ``(H, W, 3)`` uint8; every fault names ``path``."""
    try:
        mode = image.mode
        if mode in _SIXTEEN_BIT_MODES:
            return to_rgb(np.asarray(image).astype(np.uint16))
        if mode == "I":
            bits, signed = _integer_bits(image)
            values = np.asarray(image).astype(np.int64)
            full = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
            return to_rgb(_scale(np.clip(values, 0, None), float(full)))
        if mode == "F":
            values = np.asarray(image, dtype=np.float32)
            if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
                raise ImageDecodeError(
                    f"Image {str(path)!r} is a float image with values in [{np.nanmin(values):g}, "
                    f"{np.nanmax(values):g}]; float images must hold values in [0, 1]. Rescale it, or save it as "
                    "8- or 16-bit.")
            return to_rgb(values)
        has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
        return to_rgb(np.asarray(image.convert("RGBA" if has_alpha else "RGB")))
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"Cannot decode image {str(path)!r}: {exc}") from exc
