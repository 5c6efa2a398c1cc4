"""CheXpert (Stanford): ``train.csv``/``valid.csv`` (and ``test.csv``) with 14 labels.

``--root`` may be the ``CheXpert-v1.0[-small]`` folder or its parent; the CSV paths start
with that folder's name. Views combine ``Frontal/Lateral`` and ``AP/PA``. The -1
(uncertain) labels follow ``--uncertainty`` (keep, zeros, ones, ignore). CheXpert has no
reports, so the report column is empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
from radpair.data.adapters.registry import ADAPTERS
from radpair.errors import DataError

SPLIT_FILES = {"train": ["train.csv"], "val": ["valid.csv", "val.csv"], "test": ["test.csv", "test_labels.csv"]}


def locate(root: Path) -> Path:
    """The folder holding train.csv: root itself or a CheXpert-v1.0* child."""
    if (root / "train.csv").is_file() or (root / "valid.csv").is_file():
        return root
    for child in sorted(root.glob("CheXpert*")):
        if (child / "train.csv").is_file():
            return child
    raise DataError(f"{root}: no train.csv/valid.csv here or in a CheXpert-v1.0* subfolder")


@ADAPTERS.register("chexpert")
class CheXpert(DatasetAdapter):
    name = "chexpert"
    summary = "CheXpert train/valid(/test) CSVs with 14 labels and uncertainty policies"
    uses = frozenset({"uncertainty"})

    def load(self, root: Path, options: AdapterOptions) -> AdapterResult:
        data = locate(root)
        frames = []
        for split, names in SPLIT_FILES.items():
            for name in names:
                if (data / name).is_file():
                    df = read_table(data / name)
                    require_columns(df, ["Path"], data / name)
                    df["split"] = split
                    df["_source"] = str(data / name)
                    frames.append(df)
                    break
        raw = pd.concat(frames, ignore_index=True)
        label_cols = [c for c in CHEXPERT_LABELS if c in raw.columns]
        if not label_cols:
            raise DataError(f"{data}: no CheXpert label columns (expected e.g. {CHEXPERT_LABELS[:3]})")
        labels = as_label_frame(raw, label_cols, data)

        rel = raw["Path"].str.replace("\\", "/", regex=False)
        prefix = data.name + "/"
        rel = rel.where(rel.str.startswith(prefix), prefix + rel)  # test_labels.csv omits the prefix
        inner = rel.str.slice(len(prefix))
        patient = inner.str.extract(r"(patient\d+)", expand=False)
        if patient.isna().any():
            bad = raw.loc[patient.isna(), "Path"].iloc[0]
            raise DataError(f"{data}: cannot find a patientNNNNN id in Path {bad!r}")
        study = inner.str.extract(r"(patient\d+/study\d+)", expand=False).fillna(patient)

        frontal = text(raw.get("Frontal/Lateral", pd.Series("", index=raw.index))).str.strip().str.lower()
        appa = text(raw.get("AP/PA", pd.Series("", index=raw.index))).str.strip().str.upper()
        view = np.where(frontal == "lateral", "LATERAL", np.where(appa.isin(["AP", "PA"]), appa, np.where(frontal == "frontal", "FRONTAL", "")))
        if "Frontal/Lateral" not in raw.columns:  # fall back to the file name (view1_frontal.jpg)
            view = np.where(inner.str.contains("_lateral"), "LATERAL", np.where(inner.str.contains("_frontal"), "FRONTAL", ""))

        table = pd.DataFrame(
            {
                "path": rel.to_numpy(),
                "image_id": inner.str.replace(r"\.[A-Za-z]+$", "", regex=True).to_numpy(),
                "patient_id": patient.to_numpy(),
                "study_id": study.to_numpy(),
                "view": view,
                "split": raw["split"].to_numpy(),
                "report": "",
            }
        )
        for col in label_cols:
            table[col] = labels[col].to_numpy()
        return AdapterResult(table, label_cols, data.parent, ["CheXpert has no reports; report column left empty"])
