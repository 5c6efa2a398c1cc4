"""JPEG, PNG (8- and 16-bit) and other Pillow-readable radiographs.

8-bit files are display images already (MIMIC-CXR-JPG, CheXpert, IU X-ray PNGs) and are
kept as stored; 16-bit PNGs (e.g. the MIMIC PNG conversions used for edema grading) carry
raw detector-like values and go through the same range fallback as a DICOM without VOI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radpair.data.io.decoded import Decoded, to_unit_range
from radpair.data.io.geometry import Fit, scaled_shape
from radpair.data.io.spec import NormalisationSpec, RadiographError

_EXIF_ORIENTATION = 0x0112
_HIGH_BIT_MODES = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise RadiographError(path, "not a recognised image format (corrupt or not an image)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise RadiographError(path, f"cannot open image ({type(exc).__name__}: {exc})") from None


def _load(img, path: Path) -> None:
    from PIL import Image

    try:
        img.load()  # truncated files fail here; ImageFile.LOAD_TRUNCATED_IMAGES is left alone
    except Image.DecompressionBombError as exc:
        raise RadiographError(path, f"image too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise RadiographError(path, f"truncated or corrupt image data ({type(exc).__name__}: {exc})") from None


def _orient(img):
    """Apply an EXIF rotation only when one is present (web-sourced collections have them)."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF is not a reason to drop an image
        return img
    if orientation in (None, 1):
        return img
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


def decode_raster(path: Path, spec: NormalisationSpec, draft_for: tuple[int, Fit] | None = None) -> Decoded:
    """Decode with Pillow; ``draft_for=(size, fit)`` enables JPEG DCT-domain downscaling."""
    img = _open(path)
    fmt = (img.format or Path(path).suffix.lstrip(".")).lower()
    with img:
        if draft_for is not None and img.format == "JPEG":
            size, fit = draft_for
            h, w = scaled_shape(img.height, img.width, size, fit)
            # the decoder picks the largest 1/2^k reduction that keeps both sides >= (w, h)
            img.draft("L", (w, h))
        _load(img, path)
        img = _orient(img)
        mode = img.mode
        if mode in _HIGH_BIT_MODES:
            values = np.asarray(img)
            bits = _HIGH_BIT_MODES[mode]
            if mode.startswith("I;16"):
                values = values.astype(np.uint16, copy=False)
            nominal = (0.0, 65535.0) if bits == 16 else (float(values.min()), float(values.max()))
            unit = to_unit_range(values, spec.fallback, spec.percentiles, nominal)
            return Decoded(unit, fmt, bits)
        if mode != "L":
            img = img.convert("L")  # RGB/P/LA/CMYK/1 -> luma
        pixels = np.asarray(img, dtype=np.uint8)
    if spec.stretch_8bit:
        return Decoded(to_unit_range(pixels, spec.fallback, spec.percentiles, (0.0, 255.0)), fmt, 8)
    return Decoded(np.ascontiguousarray(pixels), fmt, 8)
