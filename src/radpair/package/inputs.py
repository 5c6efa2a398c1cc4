"""Input files for prediction: walking folders lazily, decoding each file the way
``radpair preprocess`` does, and noting how it differs from the training images.

Every path yields exactly one :class:`Item`, decoded or not, so the output has a row for
every input: a zero-byte file, a truncated PNG or a stray ``notes.txt`` in a folder is a
row with a reason, never a silent gap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from radpair.data.io import RadiographError, decode_radiograph, quantise, resize_to_square
from radpair.package.preprocessing import Preprocessing

SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass
class Item:
    path: str
    image: np.ndarray | None = None  # uint8 (S, S), prepared
    error: str | None = None
    flags: list[str] = field(default_factory=list)
    info: dict[str, object] = field(default_factory=dict)  # format, bits, width, height, view, study uid


def iter_paths(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Files in the order given; folders walked recursively in sorted order, one directory
    listing in memory at a time. A path that does not exist is yielded too (its row says so)."""
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name in SKIP_NAMES or name.startswith("."):
                        continue
                    yield Path(dirpath) / name
        else:
            yield p


def count_paths(inputs: Iterable[str | Path]) -> int:
    return sum(1 for _ in iter_paths(inputs))


def _header(path: Path, kind: str) -> dict[str, object]:
    """What the decoder does not report: DICOM photometric, view and study; raster mode."""
    info: dict[str, object] = {"format": kind}
    try:
        if kind == "dicom":
            import warnings

            import pydicom

            with warnings.catch_warnings():  # malformed values: the decoder gives the reason that counts
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
            info.update({"photometric": str(ds.get("PhotometricInterpretation", "") or "").strip().upper(),
                         "view": str(ds.get("ViewPosition", "") or "").strip().upper(),
                         "StudyInstanceUID": str(ds.get("StudyInstanceUID", "") or ""),
                         "_ds": ds})
        elif kind in ("png", "jpeg"):
            from PIL import Image

            with Image.open(path) as img:
                info["mode"] = img.mode
    except Exception:  # noqa: BLE001 - the decoder reports unreadable files with its own reason
        pass
    return info


def prepare(path: Path, prep: Preprocessing, study_key: str | None = None) -> Item:
    """Decode, resize onto the square, quantise (``prepare_radiograph``'s steps, kept apart
    to see the source bit depth), and list mismatches with the training input."""
    from radpair.data.io.reader import sniff_format

    item = Item(str(path))
    try:
        kind = sniff_format(path)
        info = _header(path, kind)
        ds = info.pop("_ds", None)
        if study_key and ds is not None and study_key not in info:
            info[study_key] = str(ds.get(study_key, "") or "")
        decoded = decode_radiograph(path, prep.normalisation, resize=prep.resize)
        if decoded.pixels.size == 0 or min(decoded.pixels.shape) < 1:
            raise RadiographError(path, f"image has no pixels (shape {decoded.pixels.shape})")
        h, w = decoded.pixels.shape
        item.image = quantise(resize_to_square(decoded.pixels, prep.resize), prep.normalisation.dtype)
    except RadiographError as exc:
        item.error = exc.reason
        return item
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
        item.error = f"cannot decode ({type(exc).__name__}: {exc})"
        return item
    info.update({"format": decoded.source_format, "bits": decoded.source_bits, "width": w, "height": h})
    item.info = info
    item.flags = mismatches(info, prep)
    return item


def mismatches(info: dict[str, object], prep: Preprocessing) -> list[str]:
    """Ways the input differs from the training images that resizing does not undo."""
    out = []
    exp = prep.expected or {}
    bits = exp.get("bits")
    if bits and info.get("bits") not in bits:
        out.append(f"bit depth {info.get('bits')} (trained on {'/'.join(map(str, bits))}-bit images)")
    mode = str(info.get("mode") or "")
    if mode and mode not in ("L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "1", "P"):
        out.append(f"colour image ({mode}) read as grey")
    phot = str(info.get("photometric") or "")
    if phot and phot not in ("MONOCHROME1", "MONOCHROME2"):
        out.append(f"photometric {phot} (radiographs are MONOCHROME1/2)")
    views = exp.get("views")
    view = str(info.get("view") or "")
    if views and view and view not in views:
        out.append(f"view {view} (trained on {'/'.join(views)})")
    return out
