"""Adapter output -> a validated, filtered, split index ready for the cache.

Everything that must be the same for every dataset lives here: column checks, duplicate
images, the view filter, split assignment and the patient-leak check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radpair.data.adapters.base import (
    RECORD_COLUMNS,
    AdapterOptions,
    ViewFilter,
    is_frontal,
    normalise_view,
    text,
)
from radpair.data.adapters.labels import apply_uncertainty
from radpair.data.adapters.registry import load_all
from radpair.data.adapters.splits import (
    SplitInfo,
    SplitSpec,
    assign_splits,
    check_patient_splits,
    split_manifest,
)
from radpair.errors import DataError


@dataclass
class DatasetIndex:
    """One row per image: ``RECORD_COLUMNS`` + ``label_columns``; splits assigned."""

    dataset: str
    root: Path
    image_root: Path
    table: pd.DataFrame
    label_columns: list[str]
    split: SplitInfo
    views: ViewFilter
    options: AdapterOptions
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    def resolve(self, path: str) -> Path:
        """Absolute file path of a ``path`` entry (absolute entries stay as they are)."""
        return self.image_root / path

    def manifest(self) -> pd.DataFrame:
        return split_manifest(self.table)

    def describe(self) -> dict[str, Any]:
        """JSON-ready provenance for ``meta["source"]``."""
        return {
            "dataset": self.dataset,
            "root": str(self.root.resolve()),
            "image_root": str(self.image_root.resolve()),
            "views": self.views.value,
            "options": {k: v for k, v in self.options.to_dict().items() if k in self.options.set_fields()},
            "split": self.split.to_dict(),
            "notes": list(self.notes),
        }


def merge_duplicate_images(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep one row per image file; patient ids that share a file are one person.

    Public collections sometimes list one image under two patient ids (the COVID-19
    collection does); left alone, those copies can land in train and test.
    """
    notes: list[str] = []
    dup = table["path"].duplicated(keep=False)
    if not dup.any():
        return table, notes
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for _, group in table.loc[dup].groupby("path", sort=False)["patient_id"]:
        ids = sorted(set(group))
        root = find(ids[0])
        for other in ids[1:]:
            r = find(other)
            if r != root:
                lo, hi = sorted((root, r))
                parent[hi] = lo
                root = lo
    merged = sum(1 for k in parent if find(k) != k)
    if merged:
        table = table.copy()
        table["patient_id"] = table["patient_id"].map(lambda p: find(p) if p in parent else p)
        notes.append(f"{merged} patient id(s) merged into another because they list the same image file")
    n_dup = int(table["path"].duplicated().sum())
    table = table.drop_duplicates("path", keep="first").reset_index(drop=True)
    notes.append(f"{n_dup} duplicate row(s) for an already-listed image file dropped")
    return table, notes


def _validate(table: pd.DataFrame, label_columns: list[str], dataset: str) -> pd.DataFrame:
    missing = [c for c in RECORD_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"adapter {dataset!r} produced no {missing} columns (a bug in the adapter)")
    clash = [c for c in label_columns if c in RECORD_COLUMNS]
    if clash:
        raise DataError(f"{dataset}: label columns {clash} clash with index column names")
    out = pd.DataFrame({c: text(table[c]) for c in RECORD_COLUMNS})
    for col in label_columns:
        out[col] = table[col].to_numpy(dtype=np.float32)
    if (out["path"] == "").any():
        raise DataError(f"{dataset}: {int((out['path'] == '').sum())} row(s) have no image path")
    blank_patient = out["patient_id"] == ""
    if blank_patient.any():
        raise DataError(f"{dataset}: {int(blank_patient.sum())} row(s) have no patient id; splits would not be patient-level")
    out["image_id"] = out["image_id"].where(out["image_id"] != "", out["path"])
    out["study_id"] = out["study_id"].where(out["study_id"] != "", out["image_id"])
    out["view"] = normalise_view(out["view"])
    return out


def _filter_views(table: pd.DataFrame, views: ViewFilter, dataset: str) -> tuple[pd.DataFrame, list[str]]:
    if views is ViewFilter.ALL:
        return table, []
    known = table["view"] != ""
    keep = is_frontal(table["view"]) | (~known if views is ViewFilter.FRONTAL_OR_UNKNOWN else False)
    notes = [f"view filter {views.value!r}: kept {int(keep.sum())} of {len(table)} images"]
    if len(table) and not keep.any():
        hint = "the dataset records no views; use --views all" if not known.any() else "use --views all to keep every projection"
        raise DataError(f"{dataset}: no image passes the view filter {views.value!r}; {hint}")
    return table.loc[keep].reset_index(drop=True), notes


def build_index(
    dataset: str,
    root: str | Path,
    options: AdapterOptions | None = None,
    split: SplitSpec | None = None,
    limit: int | None = None,
) -> DatasetIndex:
    """Run adapter ``dataset`` on ``root`` and apply the shared rules (see module doc)."""
    options = options or AdapterOptions()
    split = split or SplitSpec()
    adapter = load_all().build(dataset)
    adapter.check_options(options)
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset root {root} does not exist")
    result = adapter.load(root, options)
    labels = list(result.label_columns)
    table = _validate(result.table, labels, dataset)
    table[labels] = apply_uncertainty(table[labels], labels, options.uncertainty)
    notes = list(result.notes)
    table, dup_notes = merge_duplicate_images(table)
    notes += dup_notes
    views = options.views or adapter.default_views
    table, view_notes = _filter_views(table, views, dataset)
    notes += view_notes
    table, info = assign_splits(table, split, result.split_key)
    check_patient_splits(table, f"{dataset} index")
    if limit is not None:
        table = table.iloc[: int(limit)].reset_index(drop=True)
        notes.append(f"limited to the first {len(table)} images")
        info.counts = {s: int((table["split"] == s).sum()) for s in info.counts}
    if table.empty:
        raise DataError(f"{dataset}: the index for {root} is empty")
    image_root = Path(options.image_root) if options.image_root else result.image_root
    return DatasetIndex(dataset, root, image_root, table, labels, info, views, options, notes)
