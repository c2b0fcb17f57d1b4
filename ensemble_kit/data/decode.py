"""Decoding image files into 8-bit RGB faithfully, or refusing them by name.

Every bit depth Pillow reads is scaled, never clipped: 16-bit PNG/TIFF (``I;16``) by
``1/257``, 32-bit integer TIFF (``I``) by its declared bits per sample, float TIFF (``F``) in
[0, 1] by 255. Images larger than :data:`MAX_PIXELS`, float images outside [0, 1] and modes
that have no faithful 8-bit form are an :class:`~ensemble_kit.errors.ImageDecodeError` naming
the file. :func:`check_image_header` reads only the header, so a whole dataset can be checked
in seconds before training starts.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from ensemble_kit.errors import ImageDecodeError

__all__ = ["MAX_PIXELS", "check_image_header", "decode_image", "to_rgb"]

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


def _check_regular(path: Path) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"Image {str(path)!r} does not exist.") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ImageDecodeError(f"Image {str(path)!r} is not a regular file (mode {stat.filemode(info.st_mode)}).")


def _open(path: Path) -> Image.Image:
    _check_regular(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"Image {str(path)!r} is too large to decode safely ({exc}).") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"Cannot decode image {str(path)!r}: {exc}") from exc
    width, height = image.size
    problem = None
    if width <= 0 or height <= 0:
        problem = f"has size {width}x{height}"
    elif width * height > MAX_PIXELS:
        problem = f"has {width}x{height} pixels, more than the {MAX_PIXELS:,} ensemble_kit decodes"
    elif image.mode not in _EIGHT_BIT_MODES | _SIXTEEN_BIT_MODES | {"I", "F"}:
        problem = f"has mode {image.mode!r}, which has no faithful 8-bit RGB form"
    if problem:
        image.close()
        raise ImageDecodeError(f"Image {str(path)!r} {problem}.")
    return image


def check_image_header(path: str | os.PathLike[str]) -> None:
    """Check an image file without decoding its pixels: a regular file, a known format, a size and
    mode that :func:`decode_image` accepts. Raises :class:`ImageDecodeError` naming the file."""
    _open(Path(path)).close()


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
    image = _open(path)
    try:
        with image:
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
