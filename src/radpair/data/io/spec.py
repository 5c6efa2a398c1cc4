"""How stored radiograph values become display-normalised pixels.

The spec is recorded in every cache's ``meta.json`` (and from there in every checkpoint
trained on it), because an encoder trained on one mapping silently degrades on another:
inverted MONOCHROME1 films, an ignored VOI LUT or 12-bit values divided by 65535 all look
like valid images to a network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from radpair.errors import ConfigError, DataError, unknown_choice_message


class OutputDType(str, Enum):
    """Integer type of the normalised image; uint8 is what the corpus format stores."""

    UINT8 = "uint8"
    UINT16 = "uint16"

    @property
    def max_value(self) -> int:
        return 255 if self is OutputDType.UINT8 else 65535


class VoiMode(str, Enum):
    """Which DICOM value-of-interest transform maps stored values to display values.

    ``auto`` follows the standard's precedence (VOI LUT Sequence, else Window Center/Width,
    else the ``fallback`` range); ``window`` prefers the window over a LUT; ``none`` ignores
    both and always uses ``fallback``.
    """

    AUTO = "auto"
    WINDOW = "window"
    NONE = "none"


class RangeFallback(str, Enum):
    """Value range mapped to [0, 1] when a >8-bit image carries no VOI information.

    ``minmax``: the image's own min and max (robust to 12-bit data stored in 16 bits);
    ``percentile``: the ``percentiles`` of the image (robust to burned-in text and hot
    pixels); ``bits_stored``: the nominal range of BitsStored (PNG: the full 16 bits),
    which keeps absolute intensities comparable between images.
    """

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    BITS_STORED = "bits_stored"


def _enum(cls: type[Enum], value: Any, key: str) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        raise ConfigError(unknown_choice_message(key, str(value), [m.value for m in cls])) from None


@dataclass(frozen=True)
class NormalisationSpec:
    """Everything that decides the pixel values of a normalised radiograph.

    8-bit JPEG/PNG files are already display images: they are kept as stored (optionally
    with ``stretch_8bit``). DICOM and 16-bit PNG values go through modality LUT / rescale,
    VOI LUT or window (DICOM only), then ``fallback``, then MONOCHROME1 inversion, and are
    quantised to ``dtype`` only after resizing.
    """

    dtype: OutputDType = OutputDType.UINT8
    voi: VoiMode = VoiMode.AUTO
    voi_index: int = 0
    fallback: RangeFallback = RangeFallback.MINMAX
    percentiles: tuple[float, float] = (0.5, 99.5)
    invert_monochrome1: bool = True
    stretch_8bit: bool = False
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", _enum(OutputDType, self.dtype, "output dtype"))
        object.__setattr__(self, "voi", _enum(VoiMode, self.voi, "VOI mode"))
        object.__setattr__(self, "fallback", _enum(RangeFallback, self.fallback, "range fallback"))
        lo, hi = (float(p) for p in self.percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        object.__setattr__(self, "percentiles", (lo, hi))
        if self.voi_index < 0:
            raise ConfigError(f"voi_index must be >= 0, got {self.voi_index}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored as ``meta["normalisation"]``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, Enum) else (list(value) if isinstance(value, tuple) else value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormalisationSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown normalisation keys {unknown} (valid: {', '.join(sorted(names))})")
        data = dict(data)
        if "percentiles" in data:
            data["percentiles"] = tuple(data["percentiles"])
        return cls(**data)


class RadiographError(DataError):
    """A file could not be turned into a radiograph; the message names the file and why.

    The cache records these in ``skipped.csv`` instead of stopping a 300k-image run.
    """

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
