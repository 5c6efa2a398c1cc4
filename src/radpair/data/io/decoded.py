"""The in-between form of a radiograph: decoded and normalised, not yet resized or quantised.

Keeping >8-bit sources as float [0, 1] until after resizing avoids quantising twice; 8-bit
sources stay uint8 so the fast integer resize path of Pillow applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radpair.data.io.spec import OutputDType, RangeFallback


@dataclass
class Decoded:
    """``pixels`` is uint8 (display values as stored) or float32 in [0, 1], shape (H, W)."""

    pixels: np.ndarray
    source_format: str  # "jpeg", "png", "dicom", ...
    source_bits: int

    @property
    def is_unit_float(self) -> bool:
        return self.pixels.dtype == np.float32


def to_unit_range(values: np.ndarray, fallback: RangeFallback, percentiles: tuple[float, float], nominal: tuple[float, float]) -> np.ndarray:
    """Map values to float32 [0, 1] by the fallback rule; ``nominal`` is the BitsStored range."""
    values = values.astype(np.float32, copy=False)
    if fallback is RangeFallback.BITS_STORED:
        lo, hi = nominal
    elif fallback is RangeFallback.PERCENTILE:
        lo, hi = (float(v) for v in np.percentile(values, percentiles))
    else:
        lo, hi = float(values.min()), float(values.max())
    return scale_to_unit(values, lo, hi)


def scale_to_unit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map [lo, hi] -> [0, 1] with clipping; a constant image maps to zeros."""
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.float32)
    out = (values.astype(np.float32, copy=False) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def quantise(pixels: np.ndarray, dtype: OutputDType) -> np.ndarray:
    """uint8 or unit float -> the requested integer type, rounding to nearest."""
    if pixels.dtype == np.uint8:
        if dtype is OutputDType.UINT8:
            return pixels
        return pixels.astype(np.uint16) * np.uint16(257)
    scaled = np.clip(pixels, 0.0, 1.0) * np.float32(dtype.max_value)
    return np.rint(scaled).astype(np.uint8 if dtype is OutputDType.UINT8 else np.uint16)
