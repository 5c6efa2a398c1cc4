"""Folder-per-class datasets: ``[split/]class/image`` (e.g. the pediatric pneumonia set).

When every top-level folder is a split name (train/val/test, valid, validation) the split
comes from the folders; class folders become one 1/0 label column each. File names rarely
carry a patient id, so ``--patient-regex`` (first group, or a group named ``patient``)
extracts one; without it each image counts as its own patient, which the summary notes,
because an image-level split can leak patients.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from radpair.data.adapters.base import (
    AdapterOptions,
    AdapterResult,
    DatasetAdapter,
    ViewFilter,
)
from radpair.data.adapters.registry import ADAPTERS
from radpair.data.adapters.splits import SPLIT_ALIASES
from radpair.errors import ConfigError, DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"}


def patient_ids(names: pd.Series, pattern: str | None) -> tuple[pd.Series, int]:
    """Patient id per file name via ``pattern``; unmatched names fall back to the stem."""
    stems = names.map(lambda n: Path(n).stem)
    if not pattern:
        return stems, len(names)
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--patient-regex {pattern!r} is not a valid regular expression ({exc})") from None
    group = "patient" if "patient" in regex.groupindex else (1 if regex.groups else 0)

    def one(name: str) -> str | None:
        m = regex.search(name)
        return m.group(group) if m else None

    found = names.map(lambda n: one(Path(n).name))
    unmatched = int(found.isna().sum())
    return found.fillna(stems), unmatched


def _images(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out += [Path(dirpath, f) for f in sorted(filenames) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return out


@ADAPTERS.register("folder")
class FolderPerClass(DatasetAdapter):
    name = "folder"
    summary = "[split/]class/image folders, one 1/0 label per class folder"
    default_views = ViewFilter.ALL
    uses = frozenset({"patient_regex"})

    def load(self, root: Path, options: AdapterOptions) -> AdapterResult:
        if not root.is_dir():
            raise DataError(f"{root} is not a folder")
        top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not top:
            raise DataError(f"{root}: no class folders")
        by_split = all(p.name.lower() in SPLIT_ALIASES for p in top)
        groups = [(SPLIT_ALIASES[p.name.lower()], c) for p in top for c in sorted(q for q in p.iterdir() if q.is_dir())] if by_split else [("", p) for p in top]
        classes = sorted({c.name for _, c in groups})
        rows = []
        for split, class_dir in groups:
            for image in _images(class_dir):
                rows.append((image.relative_to(root).as_posix(), split, class_dir.name))
        if not rows:
            raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders")
        df = pd.DataFrame(rows, columns=["path", "split", "cls"])
        patients, unmatched = patient_ids(df["path"], options.patient_regex)
        notes = []
        if not options.patient_regex:
            notes.append("no --patient-regex: each image is its own patient, so splits cannot be checked at patient level")
        elif unmatched:
            notes.append(f"--patient-regex matched no patient in {unmatched} file name(s); their file stem is used")
        table = pd.DataFrame(
            {
                "path": df["path"],
                "image_id": df["path"].str.replace(r"\.[^./]+$", "", regex=True),
                "patient_id": patients,
                "study_id": df["path"].str.replace(r"\.[^./]+$", "", regex=True),
                "view": "",
                "split": df["split"],
                "report": "",
            }
        )
        for cls in classes:
            table[cls] = (df["cls"] == cls).to_numpy(dtype=np.float32)
        return AdapterResult(table, classes, root, notes)
