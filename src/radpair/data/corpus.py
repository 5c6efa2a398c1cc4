"""The one on-disk format every data source is converted to.

Synthetic corpora and preprocessed real datasets are stored alike, so training and
evaluation read one format and never decode JPEG/DICOM files in the training loop::

    DIR/
      meta.json          format name/version, image size, normalisation spec, label names
      images.npy         uint8 array (N, H, W), read as a memory map
      index.csv          one row per image: image_index, image_id, patient_id, study_id,
                         view, split, report, then label columns (1 / 0 / -1 / empty)
      ground_truth.csv   optional: labels known independently of the report text
                         (the synthetic generator's truth), keyed by image_id
      skipped.csv        `radpair preprocess` only: source files that could not be decoded,
      sources.csv        with the reason; image_index -> source file; patient -> split
      split_manifest.csv (see radpair.data.cache and docs/data.md)
      masks.npy          synthetic corpora only: where each finding was drawn, bit-packed
      masks.json         (N, F, H, W); see radpair.data.synth.masks and docs/explanations.md

``meta.json`` is written last, so a folder without it is an unfinished write.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radpair.errors import DataError

FORMAT_NAME = "radpair-corpus"
FORMAT_VERSION = 1
INDEX_COLUMNS = ["image_index", "image_id", "patient_id", "study_id", "view", "split", "report"]
META_FILE, IMAGES_FILE, INDEX_FILE, TRUTH_FILE = "meta.json", "images.npy", "index.csv", "ground_truth.csv"


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class Corpus:
    """A read-only view of a corpus folder; images stay on disk until indexed."""

    root: Path
    meta: dict[str, Any]
    index: pd.DataFrame
    images: np.ndarray
    ground_truth: pd.DataFrame | None = None
    label_columns: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, root: str | Path) -> "Corpus":
        root = Path(root)
        meta_path = root / META_FILE
        if not meta_path.is_file():
            raise DataError(
                f"{root}: not a radpair corpus (no {META_FILE}); create one with "
                "`radpair synth` or `radpair preprocess`, or finish an interrupted write"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT_NAME:
            raise DataError(f"{meta_path}: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
        if int(meta.get("version", 0)) > FORMAT_VERSION:
            raise DataError(f"{meta_path}: format version {meta['version']} is newer than this radpair reads")
        index = pd.read_csv(root / INDEX_FILE, keep_default_na=True, dtype={"report": str})
        index["report"] = index["report"].fillna("")
        missing = [c for c in INDEX_COLUMNS if c not in index.columns]
        if missing:
            raise DataError(f"{root / INDEX_FILE}: missing columns {missing} (found {list(index.columns)})")
        images = np.load(root / IMAGES_FILE, mmap_mode="r")
        if images.ndim != 3:
            raise DataError(f"{root / IMAGES_FILE}: expected (N, H, W), got shape {images.shape}")
        if len(index) and int(index["image_index"].max()) >= len(images):
            raise DataError(f"{root / INDEX_FILE}: image_index beyond the {len(images)} stored images")
        truth = None
        if (root / TRUTH_FILE).is_file():
            truth = pd.read_csv(root / TRUTH_FILE)
        corpus = cls(root, meta, index, images, truth, list(meta.get("label_columns", [])))
        # what read_images may pread: this very array, whose rows start after the header
        corpus._pread_images, corpus._pread_offset = images, int(images.offset)
        if hasattr(os, "preadv"):  # bind reads to the file opened here, even if it is replaced later
            corpus._fd, corpus._fd_pid = os.open(root / IMAGES_FILE, os.O_RDONLY), os.getpid()
        return corpus

    def __len__(self) -> int:
        return len(self.index)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def read_images(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Images ``rows`` as a (B, H, W) uint8 array, read with ``pread`` rather than the map.

        Reading through the memory map makes every touched page (the kernel maps page-cache
        folios of up to 2 MiB, so one 16 KiB image can bring in 2 MiB) part of the process's
        resident set, which then grows with the share of the corpus a run has visited.
        ``pread`` into a private buffer leaves those pages in the shared, reclaimable page
        cache, so the resident set stays flat in corpus size. Consecutive rows are read in
        one call. Falls back to indexing ``images`` where ``os.preadv`` does not exist or
        ``images`` is no longer the array opened from the file (a slice, a replacement).
        """
        rows = np.asarray(rows, dtype=np.int64)
        h, w = self.image_size
        if out is None:
            out = np.empty((len(rows), h, w), dtype=np.uint8)
        elif out.dtype != np.uint8 or out.shape != (len(rows), h, w):
            raise DataError(f"read_images: out must be uint8 {(len(rows), h, w)}, got {out.dtype} {out.shape}")
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= len(self.images):
            raise DataError(f"{self.root / IMAGES_FILE}: rows outside 0..{len(self.images) - 1}")
        direct = (
            hasattr(os, "preadv")
            and isinstance(self.images, np.memmap)
            and getattr(self, "_pread_images", None) is self.images  # not a slice or a replacement
            and self.images.flags.c_contiguous
            and out.flags.c_contiguous
        )
        if not direct:
            out[:] = self.images[rows]
            return out
        offset = self._pread_offset
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        if np.any(order != np.arange(len(rows))):
            buf = np.empty_like(out)
        else:
            buf = out
        fd = self._image_fd()
        item = h * w
        # runs of consecutive rows -> one read each
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        starts = np.concatenate([[0], breaks])
        stops = np.concatenate([breaks, [len(rows)]])
        flat = buf.reshape(-1)
        for a, b in zip(starts.tolist(), stops.tolist()):
            view = memoryview(flat[a * item : b * item])
            pos = offset + int(sorted_rows[a]) * item
            done = 0
            while done < len(view):
                n = os.preadv(fd, [view[done:]], pos + done)
                if n <= 0:
                    raise DataError(f"{self.root / IMAGES_FILE}: file ends before image row {int(sorted_rows[a])}")
                done += n
        if buf is not out:
            out[order] = buf
        return out

    def _image_fd(self) -> int:
        # One descriptor per process: pread does not move a shared file position, so a
        # descriptor inherited through fork stays correct, but a new pid opens its own.
        pid = os.getpid()
        if getattr(self, "_fd_pid", None) != pid:
            self._fd = os.open(self.root / IMAGES_FILE, os.O_RDONLY)
            self._fd_pid = pid
        return self._fd

    def __getstate__(self) -> dict:
        # a copy or an unpickled corpus opens its own descriptor: sharing one would let the
        # first copy to be collected close it under the others
        return {k: v for k, v in self.__dict__.items() if k not in ("_fd", "_fd_pid", "_masks")}

    def __del__(self) -> None:
        if getattr(self, "_fd_pid", None) == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass

    @property
    def has_masks(self) -> bool:
        """Whether the generator left ground-truth regions (complete ones) beside the images."""
        from radpair.data.synth.masks import CorpusMasks

        return CorpusMasks.exists(self.root)

    def masks(self, rows: Any, finding: str) -> np.ndarray:
        """(len(rows), H, W) bool regions of ``finding`` for image rows ``rows``; a DataError
        naming the folder when the corpus has none (only synthetic corpora do)."""
        if getattr(self, "_masks", None) is None:
            from radpair.data.synth.masks import CorpusMasks

            self._masks = CorpusMasks.open(self.root, self.images.shape)
        return self._masks.get(rows, finding)

    def split_index(self, split: str | None) -> pd.DataFrame:
        if split in (None, "all"):
            return self.index
        rows = self.index[self.index["split"] == split]
        if rows.empty:
            raise DataError(f"{self.root}: split {split!r} has no rows (splits: {sorted(self.index['split'].unique())})")
        return rows

    def labels(self, source: str = "ground_truth") -> pd.DataFrame:
        """Labels aligned with ``index``: the generator's truth or the index's own columns."""
        if source == "ground_truth":
            if self.ground_truth is None:
                raise DataError(f"{self.root}: no {TRUTH_FILE}; use label source 'index'")
            return self.index[["image_id"]].merge(self.ground_truth, on="image_id", how="left")
        if source == "index":
            return self.index[["image_id", *self.label_columns]]
        raise DataError(f"unknown label source {source!r} (valid: ground_truth, index)")


class CorpusWriter:
    """Create a corpus folder: allocate the image memmap, fill it, then finalise."""

    def __init__(self, root: str | Path, n_images: int, height: int, width: int) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.root / META_FILE).exists():
            (self.root / META_FILE).unlink()  # the folder is being rewritten: unfinished until finalise
        self.images = np.lib.format.open_memmap(
            self.root / IMAGES_FILE, mode="w+", dtype=np.uint8, shape=(n_images, height, width)
        )

    def finalize(
        self,
        index: pd.DataFrame,
        meta: dict[str, Any],
        label_columns: list[str] | None = None,
        ground_truth: pd.DataFrame | None = None,
    ) -> Corpus:
        missing = [c for c in INDEX_COLUMNS if c not in index.columns]
        if missing:
            raise DataError(f"index for {self.root} lacks columns {missing}")
        self.images.flush()
        atomic_write_csv(index, self.root / INDEX_FILE)
        if ground_truth is not None:
            atomic_write_csv(ground_truth, self.root / TRUTH_FILE)
        full_meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "n_images": int(self.images.shape[0]),
            "image_size": [int(self.images.shape[1]), int(self.images.shape[2])],
            "dtype": "uint8",
            "label_columns": list(label_columns or []),
            **meta,
        }
        atomic_write_text(self.root / META_FILE, json.dumps(full_meta, indent=2, sort_keys=True))
        del self.images
        return Corpus.open(self.root)
