"""Ground-truth regions: where the generator drew each finding, one mask per image and finding.

Saliency maps can only be scored against ground truth if the ground truth says *where*,
and only the generator knows that. The renderer hands every finding's soft drawing
weight (the same array it blends into the film, before conspicuity scales it) to a
:class:`RegionRecorder`, which keeps the pixels at or above half strength. The masks
therefore come from the drawing geometry itself, not from a second description of it,
and recording them reads arrays only: it draws no random numbers and changes no pixel.

On disk, beside the corpus (``radpair.data.corpus`` describes the rest)::

    masks.npy    uint8 (N, F, H, ceil(W / 8)): bit masks packed along the width
                 (``np.packbits(..., axis=-1)``, big bit order), read as a memory map
    masks.json   channel names, definitions, which rows have a non-empty mask per channel,
                 and the rows whose ground truth says "present" but whose view does not
                 draw the finding; written after masks.npy is complete, so its presence
                 is the completion marker

Read them with ``Corpus.masks(rows, finding)`` or :class:`CorpusMasks`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from radpair.data.synth.findings import FINDINGS
from radpair.errors import DataError

MASKS_FILE, MASKS_META_FILE = "masks.npy", "masks.json"
MASKS_FORMAT, MASKS_VERSION = "radpair-masks", 1

# the seven label findings first (what a localisation score is asked about), then the two
# parts of a pneumothorax that a reader looks for separately
CHANNELS: tuple[str, ...] = (*FINDINGS, "pneumothorax_line", "pneumothorax_space")
DEFINITIONS: dict[str, str] = {
    "edema": "the zones the edema grade draws: hila and upper zones (grade 1, cephalization), plus perihilar "
             "haze and the lower lateral interstitial zones (grade 2), plus the perihilar batwing (grade 3); broad",
    "cardiomegaly": "the cardiac silhouette (the drawn heart ellipse) when the heart is enlarged",
    "pleural_effusion": "fluid in the pleural space: the meniscus region, plus on AP films the supine veil "
                        "where it reaches half its strength",
    "pneumothorax": "pneumothorax_line or pneumothorax_space",
    "consolidation": "the consolidated lobe's opacity (lobe region x texture) at half strength or more; "
                     "patchy consolidation gives patches",
    "atelectasis": "the plate-like bands, or the collapsed lobe's triangle",
    "nodule": "the nodule's disc",
    "pneumothorax_line": "the visceral pleural line (a few pixels wide)",
    "pneumothorax_space": "the pleural air space between the line and the chest wall (no lung markings)",
}
# which label column of ground_truth.csv each channel belongs to
CHANNEL_LABEL = {c: ("pneumothorax" if c.startswith("pneumothorax") else c) for c in CHANNELS}


class RegionRecorder:
    """Collects one image's finding regions while it is drawn.

    ``add`` keeps the pixels whose weight reaches ``threshold``. A finding smaller than a
    pixel (an 8 mm nodule at 64 px) can have no pixel at half strength; it then keeps the
    single strongest pixel, so a drawn finding never has an empty mask.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._masks: dict[str, np.ndarray] = {}
        self._best: dict[str, tuple[float, int]] = {}

    def add(self, name: str, weight: np.ndarray, sl: tuple[slice, slice] | None = None,
            threshold: float = 0.5) -> None:
        if name not in DEFINITIONS:
            raise ValueError(f"unknown mask channel {name!r} (valid: {CHANNELS})")
        n = self.size
        mask = self._masks.get(name)
        if mask is None:
            mask = self._masks[name] = np.zeros((n, n), dtype=bool)
        if sl is None:
            sl = (slice(0, n), slice(0, n))
        w = np.asarray(weight)
        if w.size == 0:
            return
        hit = w >= threshold
        if hit.any():
            mask[sl] |= hit
            return
        k = int(np.argmax(w))  # only needed while nothing reaches the threshold
        value = float(w.flat[k])
        if value > 0 and value > self._best.get(name, (0.0, -1))[0]:
            r, c = np.unravel_index(k, w.shape)
            self._best[name] = (value, int((sl[0].start + r) * n + sl[1].start + c))

    def masks(self) -> dict[str, np.ndarray]:
        """Finished (H, W) bool masks of the channels drawn on this image (``pneumothorax`` = line | space)."""
        out = {}
        for name, mask in self._masks.items():
            if not mask.any() and name in self._best:
                mask = mask.copy()
                mask.flat[self._best[name][1]] = True
            out[name] = mask
        parts = [out[p] for p in ("pneumothorax_line", "pneumothorax_space") if p in out]
        if parts:
            out["pneumothorax"] = np.logical_or.reduce(parts)
        return out


def pack(masks: dict[str, np.ndarray], size: int) -> np.ndarray:
    """(F, H, ceil(W/8)) packed bits of one image, channels in :data:`CHANNELS` order."""
    full = np.zeros((len(CHANNELS), size, size), dtype=bool)
    for i, name in enumerate(CHANNELS):
        if name in masks:
            full[i] = masks[name]
    return np.packbits(full, axis=-1)


class MaskWriter:
    """Allocates ``masks.npy`` beside a corpus being written and finishes it with ``masks.json``.

    A stale ``masks.json`` is removed first, so a reader never pairs an old marker with a
    half-written array.
    """

    def __init__(self, root: str | Path, n_images: int, size: int) -> None:
        self.root = Path(root)
        self.size = int(size)
        remove_masks(self.root)
        self.masks = np.lib.format.open_memmap(self.root / MASKS_FILE, mode="w+", dtype=np.uint8,
                                               shape=(n_images, len(CHANNELS), size, (size + 7) // 8))
        self.present = np.zeros((n_images, len(CHANNELS)), dtype=bool)

    def write(self, start: int, packed: np.ndarray, present: np.ndarray | None = None) -> None:
        """Rows ``start:start + len(packed)``; ``present`` (rows, F) saves reading them back."""
        self.masks[start:start + len(packed)] = packed
        if present is None:
            present = packed.reshape(len(packed), packed.shape[1], -1).any(axis=-1)
        self.present[start:start + len(packed)] = present

    def finalize(self, not_drawn: dict[str, list[int]], extra: dict[str, Any] | None = None) -> None:
        from radpair.data.corpus import atomic_write_text

        self.masks.flush()
        n, f, h, _ = self.masks.shape
        present = {name: np.flatnonzero(self.present[:, i]).tolist() for i, name in enumerate(CHANNELS)}
        meta = {
            "format": MASKS_FORMAT,
            "version": MASKS_VERSION,
            "file": MASKS_FILE,
            "shape": [int(n), int(f), int(h), int(self.size)],
            "packing": "np.packbits along the last (width) axis, big bit order; "
                       "np.unpackbits(a, axis=-1, count=W).astype(bool) restores it",
            "channels": list(CHANNELS),
            "label_of_channel": dict(CHANNEL_LABEL),
            "definitions": dict(DEFINITIONS),
            "present_rows": present,
            "not_drawn_rows": {k: sorted(v) for k, v in not_drawn.items() if v},
            **(extra or {}),
            "complete": True,
        }
        del self.masks
        atomic_write_text(self.root / MASKS_META_FILE, json.dumps(meta, indent=1, sort_keys=True))


def remove_masks(root: str | Path) -> None:
    """Delete a corpus folder's masks (marker first), e.g. before it is regenerated without them."""
    for name in (MASKS_META_FILE, MASKS_FILE):
        try:
            os.remove(Path(root) / name)
        except FileNotFoundError:
            pass


@dataclass
class CorpusMasks:
    """Read-only access to a corpus's ground-truth regions (bit-packed on disk, bool here)."""

    root: Path
    meta: dict[str, Any]
    packed: np.ndarray
    channels: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        return (Path(root) / MASKS_META_FILE).is_file()

    @classmethod
    def open(cls, root: str | Path, image_shape: Sequence[int] | None = None) -> "CorpusMasks":
        """Open and check the masks; ``image_shape`` (N, H, W) is the corpus's, to catch stale masks."""
        root = Path(root)
        meta_path = root / MASKS_META_FILE
        if not meta_path.is_file():
            raise DataError(f"{root}: no ground-truth masks ({MASKS_META_FILE} is missing); only synthetic corpora "
                            "generated with masks have them (`generate_corpus(..., masks=True)`), and an "
                            "interrupted generation leaves none")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{meta_path}: not valid JSON ({exc})") from None
        if meta.get("format") != MASKS_FORMAT or not meta.get("complete"):
            raise DataError(f"{meta_path}: not a complete {MASKS_FORMAT!r} file")
        if int(meta.get("version", 0)) > MASKS_VERSION:
            raise DataError(f"{meta_path}: version {meta['version']} is newer than this radpair reads")
        arr_path = root / meta.get("file", MASKS_FILE)
        if not arr_path.is_file():
            raise DataError(f"{arr_path}: missing, though {meta_path} lists it")
        packed = np.load(arr_path, mmap_mode="r")
        n, f, h, w = (int(v) for v in meta["shape"])
        if packed.dtype != np.uint8 or packed.shape != (n, f, h, (w + 7) // 8):
            raise DataError(f"{arr_path}: shape {packed.shape} {packed.dtype} does not match {meta_path} "
                            f"({n}, {f}, {h}, {(w + 7) // 8}) uint8")
        if image_shape is not None and tuple(int(v) for v in image_shape) != (n, h, w):
            raise DataError(f"{arr_path}: masks are for {n} images of {h}x{w} px but the corpus has "
                            f"{tuple(image_shape)}; they are stale, regenerate the corpus")
        return cls(root, meta, packed, tuple(meta["channels"]))

    @property
    def shape(self) -> tuple[int, int, int]:
        n, _, h, w = self.meta["shape"]
        return int(n), int(h), int(w)

    def channel(self, finding: str) -> int:
        if finding not in self.channels:
            from radpair.errors import unknown_choice_message

            raise DataError(f"{self.root / MASKS_META_FILE}: " + unknown_choice_message("mask channel", finding,
                                                                                        self.channels))
        return self.channels.index(finding)

    def get(self, rows: Any, finding: str) -> np.ndarray:
        """(len(rows), H, W) bool masks of ``finding`` for image rows ``rows`` (image_index values)."""
        c = self.channel(finding)
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        n, h, w = self.shape
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise DataError(f"{self.root / MASKS_FILE}: rows outside 0..{n - 1}")
        return np.unpackbits(self.packed[rows, c], axis=-1, count=w).astype(bool)

    def present(self, finding: str) -> np.ndarray:
        """(N,) bool: which images have a non-empty mask of ``finding`` (from masks.json, no array read)."""
        self.channel(finding)
        out = np.zeros(self.shape[0], dtype=bool)
        out[np.asarray(self.meta["present_rows"].get(finding, []), dtype=np.int64)] = True
        return out

    def not_drawn(self, finding: str) -> np.ndarray:
        """(N,) bool: images whose ground truth has ``finding`` but whose view does not draw it."""
        self.channel(finding)
        out = np.zeros(self.shape[0], dtype=bool)
        out[np.asarray(self.meta.get("not_drawn_rows", {}).get(finding, []), dtype=np.int64)] = True
        return out


__all__ = ["CHANNELS", "DEFINITIONS", "CHANNEL_LABEL", "RegionRecorder", "MaskWriter", "CorpusMasks", "pack",
           "remove_masks", "MASKS_FILE", "MASKS_META_FILE"]
