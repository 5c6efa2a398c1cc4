"""Aspect-preserving resize of a radiograph onto a square canvas (pad or centre crop).

Stretching a 3000x2500 film to a square distorts the heart-to-thorax ratio that
cardiomegaly labels depend on, so the scale is uniform and the remainder is padded
(``pad``: the whole film, black borders) or cut (``crop``: the film fills the square).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from radpair.errors import ConfigError, unknown_choice_message


class Fit(str, Enum):
    PAD = "pad"
    CROP = "crop"


class Resample(str, Enum):
    """Pillow filters; ``area`` (box averaging) neither rings nor overshoots when shrinking."""

    AREA = "area"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"

    def pil_filter(self) -> int:
        from PIL import Image

        return {
            Resample.AREA: Image.Resampling.BOX,
            Resample.BILINEAR: Image.Resampling.BILINEAR,
            Resample.BICUBIC: Image.Resampling.BICUBIC,
            Resample.LANCZOS: Image.Resampling.LANCZOS,
        }[self]


@dataclass(frozen=True)
class ResizeSpec:
    """Output geometry of the cache; recorded in ``meta["preprocess"]``.

    ``draft`` lets the JPEG decoder downscale by 1/2, 1/4 or 1/8 in the DCT domain when the
    target is small enough, which is ~3x faster than decoding at full size; the final
    resize still runs with ``resample`` from the draft size.
    """

    size: int
    fit: Fit = Fit.PAD
    resample: Resample = Resample.AREA
    draft: bool = True

    def __post_init__(self) -> None:
        if int(self.size) < 8:
            raise ConfigError(f"image size must be at least 8 pixels, got {self.size}")
        for name, cls in (("fit", Fit), ("resample", Resample)):
            value = getattr(self, name)
            if not isinstance(value, cls):
                try:
                    object.__setattr__(self, name, cls(value))
                except ValueError:
                    raise ConfigError(unknown_choice_message(name, str(value), [m.value for m in cls])) from None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (getattr(self, f.name).value if isinstance(getattr(self, f.name), Enum) else getattr(self, f.name))
                for f in dataclasses.fields(self)}


def scaled_shape(height: int, width: int, size: int, fit: Fit) -> tuple[int, int]:
    """(h, w) after uniform scaling: longest side == size (pad) or shortest side == size (crop)."""
    ref = max(height, width) if fit is Fit.PAD else min(height, width)
    scale = size / ref
    h = max(1, round(height * scale))
    w = max(1, round(width * scale))
    if fit is Fit.PAD:
        return min(h, size), min(w, size)
    return max(h, size), max(w, size)


def resize_to_square(pixels: np.ndarray, spec: ResizeSpec) -> np.ndarray:
    """uint8 or float32 (H, W) -> same dtype (size, size), aspect preserved."""
    from PIL import Image

    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    size = int(spec.size)
    h, w = scaled_shape(pixels.shape[0], pixels.shape[1], size, spec.fit)
    if (h, w) != pixels.shape:
        mode = "L" if pixels.dtype == np.uint8 else "F"
        src = pixels if mode == "L" else pixels.astype(np.float32, copy=False)
        img = Image.fromarray(np.ascontiguousarray(src), mode=mode)
        pixels = np.asarray(img.resize((w, h), spec.resample.pil_filter()))
    if spec.fit is Fit.PAD:
        out = np.zeros((size, size), dtype=pixels.dtype)
        top, left = (size - h) // 2, (size - w) // 2
        out[top : top + h, left : left + w] = pixels
        return out
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(pixels[top : top + size, left : left + size])
