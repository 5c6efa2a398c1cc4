"""DICOM radiographs -> display-normalised float [0, 1].

Order of operations follows the DICOM grayscale pipeline (PS3.3 C.11, PS3.4 N.2.1.1):
stored values (masked to BitsStored) -> Modality LUT or Rescale Slope/Intercept -> VOI LUT
Sequence or Window Center/Width -> MONOCHROME1 inversion. Each step exists because skipping
it produces plausible-looking but wrong images: MONOCHROME1 films come out as negatives,
an ignored VOI leaves the lungs washed out, and 12-bit data divided by 65535 is nearly black.
pydicom decodes the pixels and applies Modality/VOI LUT *tables*; the window arithmetic is
done here so its output range is exactly [0, 1] whatever the bit depth or rescale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from radpair.data.io.decoded import Decoded, scale_to_unit, to_unit_range
from radpair.data.io.spec import NormalisationSpec, RadiographError, VoiMode

_COMPRESSED_HINT = (
    "compressed DICOM transfer syntax {uid} cannot be decoded here; install the optional "
    "decoders: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
)


def read_dataset(path: Path) -> Any:
    import pydicom  # lazy: only DICOM users pay for the import
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise RadiographError(path, f"unreadable DICOM ({type(exc).__name__}: {exc})") from None


def _stored_pixels(ds: Any, path: Path) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise RadiographError(path, "DICOM has no pixel data")
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        if "decode" in str(exc).lower() or "plugin" in str(exc).lower() or "handler" in str(exc).lower():
            raise RadiographError(path, _COMPRESSED_HINT.format(uid=uid)) from None
        raise RadiographError(path, f"pixel data could not be decoded ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # truncated or inconsistent pixel data: pydicom raises many types
        raise RadiographError(path, f"pixel data could not be decoded ({type(exc).__name__}: {exc})") from None
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if n_frames > 1:
        arr = arr[0]  # radiographs are single-frame; take the first of a multi-frame object
    if samples == 1 and arr.ndim != 2:
        raise RadiographError(path, f"expected a 2-D grayscale image, got pixel array shape {arr.shape}")
    return arr


def _nominal_stored_range(ds: Any, arr: np.ndarray) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8) or arr.dtype.itemsize * 8)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _mask_to_bits_stored(ds: Any, arr: np.ndarray) -> np.ndarray:
    """Clear bits above BitsStored in unsigned data (old overlays live there); pydicom >= 3
    already does this, older versions do not."""
    bits = int(ds.get("BitsStored", 0) or 0)
    if arr.dtype.kind == "u" and 0 < bits < arr.dtype.itemsize * 8:
        return arr & np.array((1 << bits) - 1, dtype=arr.dtype)
    return arr


def _modality(ds: Any, arr: np.ndarray) -> np.ndarray:
    """Stored values -> modality values (float32): Modality LUT Sequence or rescale."""
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    values = arr.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if slope != 1.0 or intercept != 0.0:
        values = values * np.float32(slope) + np.float32(intercept)
    return values


def _nominal_modality_range(ds: Any, arr: np.ndarray) -> tuple[float, float]:
    lo, hi = _nominal_stored_range(ds, arr)
    ends = _modality(ds, np.array([lo, hi], dtype=np.int64 if lo < 0 else np.uint32))
    return float(ends.min()), float(ends.max())


def _multi(value: Any, index: int) -> float:
    """Window Center/Width may be multi-valued (alternative views); pick ``index``."""
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        values = list(value)
        return float(values[min(index, len(values) - 1)])
    return float(value)


def apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Window Center/Width -> [0, 1] following PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3."""
    function = (function or "LINEAR").upper()
    x = values.astype(np.float32, copy=False)
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - np.float32(center)) / np.float32(width)))).astype(np.float32)
    if function == "LINEAR_EXACT":
        c, w = center, width
    else:  # LINEAR (the default): the standard's half-pixel convention
        c, w = center - 0.5, width - 1.0
    if w <= 0:
        return (x > np.float32(c)).astype(np.float32)
    out = (x - np.float32(c)) / np.float32(w) + np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def _has_window(ds: Any) -> bool:
    return "WindowCenter" in ds and "WindowWidth" in ds and ds.WindowCenter is not None and ds.WindowWidth is not None


def _apply_voi_lut(ds: Any, values: np.ndarray, index: int, path: Path) -> np.ndarray:
    """VOI LUT Sequence -> [0, 1], scaled by the LUT's own output range.

    The range comes from the table, not from LUT Descriptor bits: some vendors declare 16
    bits for 12-bit tables, which would otherwise come out four bits too dark.
    """
    from pydicom.pixels import apply_voi

    items = ds.VOILUTSequence
    index = min(index, len(items) - 1)
    descriptor = [int(v) for v in items[index].LUTDescriptor]
    n_entries = descriptor[0] or 2**16
    first = descriptor[1]
    if first >= 2**15 and int(ds.get("PixelRepresentation", 0) or 0) == 1:
        first -= 2**16  # the first-mapped value is signed for signed pixel data
    try:
        table = np.asarray(apply_voi(np.arange(first, first + n_entries, dtype=np.int64), ds, index), dtype=np.float32)
        mapped = np.asarray(apply_voi(np.rint(values).astype(np.int64), ds, index), dtype=np.float32)
    except (NotImplementedError, ValueError, AttributeError, IndexError) as exc:
        raise RadiographError(path, f"invalid VOI LUT Sequence ({type(exc).__name__}: {exc})") from None
    return scale_to_unit(mapped, float(table.min()), float(table.max()))


def _luma(rgb: np.ndarray) -> np.ndarray:
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return rgb.astype(np.float32) @ weights


def decode_dicom(path: Path, spec: NormalisationSpec) -> Decoded:
    """Read one DICOM file into display-normalised pixels (see module docstring)."""
    ds = read_dataset(path)
    arr = _stored_pixels(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8) or 8)

    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        # colour secondary captures: pydicom returns RGB; reduce to luma, 8-bit display values
        gray = _luma(arr)
        return Decoded(scale_to_unit(gray, 0.0, float(2**bits - 1)), "dicom", bits)

    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise RadiographError(path, f"unsupported PhotometricInterpretation {photometric!r} for a radiograph")

    arr = _mask_to_bits_stored(ds, arr)
    values = _modality(ds, arr)

    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = _has_window(ds)
    if spec.voi is VoiMode.NONE:
        use = "fallback"
    elif spec.voi is VoiMode.WINDOW:
        use = "window" if has_window else ("lut" if has_lut else "fallback")
    else:  # AUTO: the LUT is the more specific description when both are present
        use = "lut" if has_lut else ("window" if has_window else "fallback")

    if use == "window":
        center = _multi(ds.WindowCenter, spec.voi_index)
        width = _multi(ds.WindowWidth, spec.voi_index)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
        if width <= 0 or (function.upper() == "LINEAR" and width < 1):
            use = "lut" if has_lut else "fallback"  # invalid window: treat as absent
        else:
            unit = apply_window(values, center, width, function)
    if use == "lut":
        unit = _apply_voi_lut(ds, values, spec.voi_index, path)
    if use == "fallback":
        nominal = _nominal_modality_range(ds, arr)
        if bits <= 8 and not spec.stretch_8bit:
            unit = scale_to_unit(values, *nominal)  # 8-bit DICOM: already display values
        else:
            unit = to_unit_range(values, spec.fallback, spec.percentiles, nominal)

    if photometric == "MONOCHROME1" and spec.invert_monochrome1:
        unit = np.float32(1.0) - unit
    return Decoded(np.ascontiguousarray(unit, dtype=np.float32), "dicom", bits)
