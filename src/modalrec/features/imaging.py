"""Decode any product or poster image into plain 8-bit RGB, or fail with a clear reason.

Real catalogues hold grayscale scans, CMYK print files, palette GIFs and PNGs with transparency,
16-bit PNGs, tiny thumbnails and phone photos whose pixels are stored sideways (EXIF orientation).
An image encoder wants none of that: this module normalises them all the same way, so that the
vectors depend on what the image shows and not on how it was stored. Transparent pixels are
composited on white, as product photos are shown.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from modalrec.errors import FeatureError

BACKGROUND = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def load_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as an 8-bit RGB ``PIL.Image``, upright; FeatureError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FeatureError("image file not found", where=str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return to_rgb(image)
    except FeatureError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, MemoryError) as error:
        raise FeatureError(f"cannot decode image: {error}", where=str(path)) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> upright 8-bit RGB (alpha over white, 16-bit and float scaled to 0..255)."""
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(image), mode="L").convert("RGB")
    if mode == "P":
        has_alpha = "transparency" in image.info or (image.palette is not None and image.palette.mode == "RGBA")
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(image: Image.Image) -> np.ndarray:
    """Scale a high-bit-depth or float single-channel image to 0..255."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    elif image.mode.startswith("I;16") or (values.size and values.max() > 255):
        top = 65535.0
    else:
        top = 255.0
    scaled = np.nan_to_num(values, nan=0.0) * (255.0 / top)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
