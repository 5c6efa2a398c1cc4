"""Pulmonary edema severity grades for MIMIC-CXR (PhysioNet ``mimic-cxr-pe-severity``).

Three label files, graded 0 none / 1 vascular congestion / 2 interstitial / 3 alveolar
edema: regex-extracted from reports (study level), expert-read reports (study level) and
consensus image reads (image level, ``dicom_id``). They become three label columns so a
user can train on regex grades and hold out the consensus set, as Liao/Chauhan et al. do.
``mimic_cxr_edema`` is MIMIC-CXR-JPG restricted to the graded images.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd

from radpair.data.adapters.base import (
    AdapterOptions,
    AdapterResult,
    as_label_frame,
    read_table,
    require_columns,
)
from radpair.data.adapters.mimic_cxr_jpg import MimicCxrJpg
from radpair.data.adapters.registry import ADAPTERS
from radpair.errors import DataError

EDEMA_SOURCES = ("regex", "expert", "consensus")


def edema_column(source: str) -> str:
    return f"edema_severity_{source}"


def find_edema_files(root: Path) -> dict[str, Path]:
    """{source: file} for the files whose names contain regex/expert/consensus."""
    if not root.is_dir():
        raise DataError(f"edema label folder {root} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if not re.search(r"\.csv(\.gz)?$", path.name):
            continue
        for source in EDEMA_SOURCES:
            if source in path.name.lower() and source not in found:
                found[source] = path
    if not found:
        raise DataError(
            f"{root}: no edema severity CSVs (expected names containing 'regex', 'expert' or 'consensus', "
            "e.g. regex_report_edema_severity.csv)"
        )
    return found


def _grades(path: Path) -> pd.DataFrame:
    df = read_table(path)
    require_columns(df, ["subject_id", "study_id", "edema_severity"], path)
    grades = as_label_frame(df, ["edema_severity"], path)["edema_severity"]
    bad = grades.notna() & ~grades.isin([0, 1, 2, 3])
    if bad.any():
        raise DataError(f"{path}: edema_severity must be 0-3, found {sorted(set(grades[bad]))[:5]}")
    df = df.copy()
    df["edema_severity"] = grades.to_numpy()
    return df


def join_edema(records: pd.DataFrame, root: Path, notes: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Add one grade column per available source; image-level when the file has dicom_id."""
    columns = []
    files = find_edema_files(root)
    for source in [s for s in EDEMA_SOURCES if s in files]:
        path = files[source]
        df = _grades(path)
        col = edema_column(source)
        if "dicom_id" in df.columns:
            keyed = df[["dicom_id", "edema_severity"]].drop_duplicates("dicom_id").rename(columns={"edema_severity": col})
            records = records.merge(keyed, on="dicom_id", how="left")
        else:
            keyed = df[["subject_id", "study_id", "edema_severity"]].drop_duplicates(["subject_id", "study_id"])
            records = records.merge(keyed.rename(columns={"edema_severity": col}), on=["subject_id", "study_id"], how="left")
        records[col] = records[col].astype(np.float32)
        notes.append(f"edema {source}: {int(records[col].notna().sum())} images graded ({path.name})")
        columns.append(col)
    return records, columns


@ADAPTERS.register("mimic_cxr_edema")
class MimicCxrEdema(MimicCxrJpg):
    name = "mimic_cxr_edema"
    summary = "MIMIC-CXR-JPG images that have a pulmonary edema severity grade"

    def load(self, root: Path, options: AdapterOptions) -> AdapterResult:
        if not options.edema_root:
            options = dataclasses.replace(options, edema_root=str(root))
        result = super().load(root, options)
        edema_cols = [c for c in result.label_columns if c.startswith("edema_severity_")]
        graded = result.table[edema_cols].notna().any(axis=1)
        result.table = result.table.loc[graded].reset_index(drop=True)
        result.notes.append(f"kept {int(graded.sum())} images with an edema grade")
        return result
