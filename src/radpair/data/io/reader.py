"""One entry point for every radiograph file: sniff the format, decode, resize, quantise.

The format is taken from the file's first bytes, not its name: PACS exports often have no
extension, and a ``.png`` that is really a JPEG is common in scraped collections.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radpair.data.io.decoded import Decoded, quantise
from radpair.data.io.geometry import ResizeSpec, resize_to_square
from radpair.data.io.spec import NormalisationSpec, RadiographError

DEFAULT_SPEC = NormalisationSpec()
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ""}


def sniff_format(path: Path) -> str:
    """'dicom', 'png', 'jpeg' or 'other' from the magic bytes; raises for missing/empty files."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except FileNotFoundError:
        raise RadiographError(path, "file not found") from None
    except IsADirectoryError:
        raise RadiographError(path, "is a directory, not an image file") from None
    except OSError as exc:
        raise RadiographError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not head:
        raise RadiographError(path, "empty file (0 bytes)")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if Path(path).suffix.lower() in _DICOM_SUFFIXES:
        return "dicom"  # DICOM without the 128-byte preamble (old ACR-NEMA style exports)
    return "other"


def decode_radiograph(path: str | Path, spec: NormalisationSpec = DEFAULT_SPEC, *, resize: ResizeSpec | None = None) -> Decoded:
    """Decode and normalise, not yet resized; ``resize`` only enables JPEG draft decoding."""
    path = Path(path)
    kind = sniff_format(path)
    if kind == "dicom":
        from radpair.data.io.dicom import decode_dicom

        return decode_dicom(path, spec)
    from radpair.data.io.raster import decode_raster

    draft_for = (resize.size, resize.fit) if (resize is not None and resize.draft) else None
    return decode_raster(path, spec, draft_for)


def read_radiograph(path: str | Path, spec: NormalisationSpec = DEFAULT_SPEC) -> np.ndarray:
    """Full-resolution normalised single-channel image, uint8 or uint16 per ``spec.dtype``."""
    return quantise(decode_radiograph(path, spec).pixels, spec.dtype)


def prepare_radiograph(path: str | Path, resize: ResizeSpec, spec: NormalisationSpec = DEFAULT_SPEC) -> np.ndarray:
    """Decode, resize onto a (size, size) canvas, then quantise: what the cache stores."""
    decoded = decode_radiograph(path, spec, resize=resize)
    if decoded.pixels.size == 0 or min(decoded.pixels.shape) < 1:
        raise RadiographError(path, f"image has no pixels (shape {decoded.pixels.shape})")
    return quantise(resize_to_square(decoded.pixels, resize), spec.dtype)
