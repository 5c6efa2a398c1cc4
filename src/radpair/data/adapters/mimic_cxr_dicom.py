"""MIMIC-CXR (DICOM, PhysioNet): ``files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.dcm`` + reports.

Images come from ``cxr-record-list.csv[.gz]`` when present, else from a walk of
``files/``. Views, official splits and CheXpert labels live in the MIMIC-CXR-JPG CSVs;
give their folder with ``--metadata-root`` (or put them in the root). Without them the
view is read from each DICOM header (slow on 377k files) and the split is hashed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from radpair.data.adapters.base import (
    AdapterOptions,
    AdapterResult,
    DatasetAdapter,
    ViewFilter,
    read_table,
    require_columns,
)
from radpair.data.adapters.mimic_cxr_jpg import (
    add_reports,
    find_mimic_csv,
    finish,
    join_mimic_tables,
    read_metadata,
)
from radpair.data.adapters.registry import ADAPTERS
from radpair.errors import DataError

_DCM_PATH = re.compile(r"p(\d+)/s(\d+)/([^/]+)\.dcm$")


def _record_list(root: Path) -> pd.DataFrame:
    for name in ("cxr-record-list.csv", "cxr-record-list.csv.gz"):
        if (root / name).is_file():
            path = root / name
            records = read_table(path)
            require_columns(records, ["subject_id", "study_id", "dicom_id", "path"], path)
            return records[["subject_id", "study_id", "dicom_id", "path"]]
    files = root / "files"
    if not files.is_dir():
        raise DataError(f"{root}: neither cxr-record-list.csv(.gz) nor a files/ folder (is this the MIMIC-CXR root?)")
    rows = []
    for dirpath, dirnames, filenames in os.walk(files):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".dcm"):
                rel = Path(dirpath, name).relative_to(root).as_posix()
                m = _DCM_PATH.search(rel)
                if m:
                    rows.append((m.group(1), m.group(2), m.group(3), rel))
    if not rows:
        raise DataError(f"{files}: no pNNN/sNNN/*.dcm files found")
    return pd.DataFrame(rows, columns=["subject_id", "study_id", "dicom_id", "path"])


def _header_views(root: Path, paths: pd.Series) -> list[str]:
    import pydicom

    views = []
    for rel in paths:
        try:
            ds = pydicom.dcmread(str(root / rel), stop_before_pixels=True, specific_tags=["ViewPosition"])
            views.append(str(ds.get("ViewPosition", "") or ""))
        except Exception:  # unreadable headers surface later, in skipped.csv, with the reason
            views.append("")
    return views


@ADAPTERS.register("mimic_cxr_dicom")
class MimicCxrDicom(DatasetAdapter):
    name = "mimic_cxr_dicom"
    summary = "MIMIC-CXR DICOM tree + free-text reports (+ MIMIC-CXR-JPG CSVs for views/splits/labels)"
    uses = frozenset({"uncertainty", "label_source", "reports", "metadata_root", "edema_root"})

    def load(self, root: Path, options: AdapterOptions) -> AdapterResult:
        notes: list[str] = []
        records = _record_list(root)
        meta_root = Path(options.metadata_root) if options.metadata_root else root
        if find_mimic_csv(meta_root, "metadata", required=False) is not None:
            meta = read_metadata(meta_root)[["dicom_id", "ViewPosition"]].rename(columns={"ViewPosition": "view"})
            records = records.merge(meta, on="dicom_id", how="left")
            records, label_cols = join_mimic_tables(records, meta_root, options, notes)
        else:
            if options.metadata_root:
                raise DataError(f"{meta_root}: no mimic-cxr-<version>-metadata.csv(.gz)")
            if options.label_source not in (None, "none"):
                raise DataError(f"{root}: label source {options.label_source!r} needs the MIMIC-CXR-JPG CSVs; pass --metadata-root")
            views = options.views or self.default_views
            records["view"] = "" if views is ViewFilter.ALL else _header_views(root, records["path"])
            if views is not ViewFilter.ALL:
                notes.append("views read from DICOM headers (pass --metadata-root to use the MIMIC-CXR-JPG metadata instead)")
            records["split"] = ""
            notes.append("no MIMIC-CXR-JPG split CSV; a hashed patient split is used")
            label_cols = []
        records = add_reports(records, root, options, notes)
        if options.edema_root:
            from radpair.data.adapters.mimic_edema import join_edema

            records, edema_cols = join_edema(records, Path(options.edema_root), notes)
            label_cols = label_cols + edema_cols
        return finish(records, label_cols, root, notes)
