"""MIMIC-CXR-JPG (PhysioNet): ``files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg`` + CSVs.

Reads ``mimic-cxr-2.x.0-metadata.csv``, ``-split.csv`` and ``-chexpert.csv`` (or
``-negbio.csv``), gzipped or not. Reports come from the MIMIC-CXR reports (folder or zip)
when found; ``--image-ext png`` reads the 16-bit PNG conversions of the same tree.
Splits are the official ones (``validate`` becomes ``val``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from radpair.data.adapters.base import (
    AdapterOptions,
    AdapterResult,
    DatasetAdapter,
    as_label_frame,
    read_table,
    require_columns,
    text,
)
from radpair.data.adapters.labels import CHEXPERT_LABELS
from radpair.data.adapters.mimic_reports import MimicReports, attach_reports
from radpair.data.adapters.registry import ADAPTERS
from radpair.errors import ConfigError, DataError, unknown_choice_message

LABEL_SOURCES = ("chexpert", "negbio", "none")


def find_mimic_csv(root: Path, kind: str, required: bool = True) -> Path | None:
    """``mimic-cxr-<version>-<kind>.csv[.gz]``, newest version first."""
    pattern = re.compile(rf"^mimic-cxr-(\d+)\.(\d+)\.(\d+)-{kind}\.csv(\.gz)?$")
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = pattern.match(p.name)
            if m:
                found.append(((int(m.group(1)), int(m.group(2)), int(m.group(3)), p.suffix != ".gz"), p))
    if not found:
        if required:
            raise DataError(f"{root}: no mimic-cxr-<version>-{kind}.csv or .csv.gz (is this the MIMIC-CXR-JPG root folder?)")
        return None
    return max(found)[1]


def image_relpath(subject: pd.Series, study: pd.Series, dicom: pd.Series, ext: str) -> pd.Series:
    return "files/p" + subject.str[:2] + "/p" + subject + "/s" + study + "/" + dicom + "." + ext


def read_metadata(root: Path) -> pd.DataFrame:
    path = find_mimic_csv(root, "metadata")
    meta = read_table(path)
    require_columns(meta, ["dicom_id", "subject_id", "study_id", "ViewPosition"], path)
    return meta


def read_official_split(root: Path) -> pd.DataFrame | None:
    path = find_mimic_csv(root, "split", required=False)
    if path is None:
        return None
    split = read_table(path)
    require_columns(split, ["dicom_id", "split"], path)
    return split[["dicom_id", "split"]]


def read_study_labels(root: Path, source: str) -> tuple[pd.DataFrame | None, list[str]]:
    """Study-level CheXpert/NegBio labels keyed by (subject_id, study_id)."""
    if source not in LABEL_SOURCES:
        raise ConfigError(unknown_choice_message("label source", source, LABEL_SOURCES))
    if source == "none":
        return None, []
    path = find_mimic_csv(root, source)
    labels = read_table(path)
    require_columns(labels, ["subject_id", "study_id"], path)
    columns = [c for c in labels.columns if c not in ("subject_id", "study_id")]
    unknown = sorted(set(columns) - set(CHEXPERT_LABELS))
    if unknown:
        raise DataError(f"{path}: unexpected label columns {unknown}")
    frame = as_label_frame(labels, columns, path)
    frame.insert(0, "subject_id", labels["subject_id"].to_numpy())
    frame.insert(1, "study_id", labels["study_id"].to_numpy())
    return frame, columns


def join_mimic_tables(
    records: pd.DataFrame, root: Path, options: AdapterOptions, notes: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Add official split, study labels and reports to rows keyed by dicom/subject/study."""
    split = read_official_split(root)
    if split is not None:
        records = records.merge(split, on="dicom_id", how="left")
    else:
        records["split"] = ""
        notes.append(f"{root}: no split CSV; a hashed patient split is used")
    labels, label_cols = read_study_labels(root, options.label_source or "chexpert")
    if labels is not None:
        records = records.merge(labels, on=["subject_id", "study_id"], how="left")
    return records, label_cols


def add_reports(records: pd.DataFrame, root: Path, options: AdapterOptions, notes: list[str]) -> pd.DataFrame:
    reports = MimicReports.discover(root, options.reports)
    texts, missing = attach_reports(records["subject_id"], records["study_id"], reports)
    if reports is None:
        notes.append(f"no MIMIC-CXR reports found under {root}; pass --reports DIR_OR_ZIP (report column left empty)")
    elif missing:
        notes.append(f"{missing} stud(ies) have no report file in {reports.source}")
    if reports is not None:
        reports.close()
    records = records.copy()
    records["report"] = texts
    return records


def finish(records: pd.DataFrame, label_cols: list[str], root: Path, notes: list[str]) -> AdapterResult:
    table = pd.DataFrame(
        {
            "path": records["path"].to_numpy(),
            "image_id": records["dicom_id"].to_numpy(),
            "patient_id": records["subject_id"].to_numpy(),
            "study_id": records["study_id"].to_numpy(),
            "view": text(records["view"]).to_numpy(),
            "split": text(records["split"]).to_numpy(),
            "report": records["report"].to_numpy(),
        }
    )
    for col in label_cols:
        table[col] = records[col].to_numpy()
    return AdapterResult(table, label_cols, root, notes)


@ADAPTERS.register("mimic_cxr_jpg")
class MimicCxrJpg(DatasetAdapter):
    name = "mimic_cxr_jpg"
    summary = "MIMIC-CXR-JPG tree + metadata/split/chexpert CSVs, reports from MIMIC-CXR"
    uses = frozenset({"uncertainty", "label_source", "reports", "edema_root", "image_ext"})

    def load(self, root: Path, options: AdapterOptions) -> AdapterResult:
        notes: list[str] = []
        meta = read_metadata(root)
        ext = (options.image_ext or "jpg").lstrip(".")
        records = pd.DataFrame(
            {
                "dicom_id": meta["dicom_id"],
                "subject_id": meta["subject_id"],
                "study_id": meta["study_id"],
                "view": meta["ViewPosition"],
            }
        )
        records["path"] = image_relpath(records["subject_id"], records["study_id"], records["dicom_id"], ext)
        records, label_cols = join_mimic_tables(records, root, options, notes)
        records = add_reports(records, root, options, notes)
        if options.edema_root:
            from radpair.data.adapters.mimic_edema import join_edema

            records, edema_cols = join_edema(records, Path(options.edema_root), notes)
            label_cols = label_cols + edema_cols
        return finish(records, label_cols, root, notes)
