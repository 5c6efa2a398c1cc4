"""COVID-19 image data collection (Cohen et al., ieee8023/covid-chestxray-dataset).

Reads the collection's ``metadata.csv`` (``patientid``, ``finding``, ``view``,
``modality``, ``folder``, ``filename``, ``clinical_notes``; early versions spell
``Patientid`` and ``notes``) or a derived ``pairs.csv`` whose ``image_256`` column names
files in ``images/``. CT rows and axial/coronal views are dropped (not radiographs).
``finding`` values such as ``Pneumonia/Viral/COVID-19`` or ``COVID-19, ARDS`` become one
1/0 label per finding; ``todo``/``Unknown`` findings are NaN. The report is the case's
clinical notes, often shared by all images of a patient. No official split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from radpair.data.adapters.base import (
    AdapterOptions,
    AdapterResult,
    DatasetAdapter,
    read_table,
    text,
)
from radpair.data.adapters.registry import ADAPTERS
from radpair.errors import DataError

METADATA_NAMES = ["metadata.csv", "pairs.csv"]
NON_RADIOGRAPH_VIEWS = {"CT", "AXIAL", "CORONAL", "SAGITTAL"}
UNKNOWN_FINDINGS = {"", "todo", "unknown", "nan"}


def _column(df: pd.DataFrame, *names: str) -> str | None:
    lower = {str(c).strip().lower(): c for c in df.columns}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def finding_tokens(value: str) -> list[str]:
    parts = re.split(r"[,/]", value or "")
    return [p.strip() for p in parts if p.strip() and p.strip().lower() not in UNKNOWN_FINDINGS]


@ADAPTERS.register("covid")
class CovidCollection(DatasetAdapter):
    name = "covid"
    summary = "ieee8023 COVID-19 image collection metadata.csv (or the derived pairs.csv)"
    uses = frozenset({"csv"})

    def load(self, root: Path, options: AdapterOptions) -> AdapterResult:
        notes: list[str] = []
        if options.csv:
            path = Path(options.csv) if Path(options.csv).is_absolute() else root / options.csv
        else:
            path = next((root / n for n in METADATA_NAMES if (root / n).is_file()), root / METADATA_NAMES[0])
        if not path.is_file():
            raise DataError(f"{root}: no {' or '.join(METADATA_NAMES)} (pass --csv FILE)")
        df = read_table(path)
        pid_col = _column(df, "patientid", "patient_id")
        image_col = _column(df, "image_256", "filename")
        if pid_col is None or image_col is None:
            raise DataError(f"{path}: needs patientid and filename (or image_256) columns (columns: {', '.join(df.columns)})")
        view_col, notes_col = _column(df, "view"), _column(df, "clinical_notes", "notes")
        modality_col, folder_col = _column(df, "modality"), _column(df, "folder")
        finding_col, offset_col = _column(df, "finding"), _column(df, "offset")

        keep = pd.Series(True, index=df.index)
        if modality_col is not None:
            keep &= text(df[modality_col]).str.strip().str.lower().isin(["x-ray", "xray", ""])
        views = text(df[view_col]).str.strip().str.upper() if view_col else pd.Series("", index=df.index)
        keep &= ~views.isin(NON_RADIOGRAPH_VIEWS)
        if (~keep).any():
            notes.append(f"{int((~keep).sum())} CT/axial/coronal row(s) dropped (not radiographs)")
        df, views = df.loc[keep].reset_index(drop=True), views.loc[keep].reset_index(drop=True)

        files = text(df[image_col]).str.strip()
        if image_col.lower() == "image_256" or folder_col is None:
            folder = pd.Series("images", index=df.index)
        else:
            folder = text(df[folder_col]).str.strip().replace("", "images")
        paths = folder + "/" + files
        patient = text(df[pid_col]).str.strip()
        offset = text(df[offset_col]).str.strip() if offset_col else pd.Series("", index=df.index)
        stems = files.map(lambda f: Path(f).stem)
        study = patient + "/" + offset.where(offset != "", stems)

        findings = text(df[finding_col]) if finding_col else pd.Series("", index=df.index)
        tokens = findings.map(finding_tokens)
        label_cols = sorted({t for ts in tokens for t in ts})
        table = pd.DataFrame(
            {
                "path": paths,
                "image_id": stems,
                "patient_id": patient,
                "study_id": study,
                "view": views,
                "split": "",
                "report": text(df[notes_col]).str.strip() if notes_col else "",
            }
        )
        known = tokens.map(bool).to_numpy()
        for label in label_cols:
            values = np.array([1.0 if label in ts else 0.0 for ts in tokens], dtype=np.float32)
            values[~known] = np.nan
            table[label] = values
        return AdapterResult(table, label_cols, root, notes)
