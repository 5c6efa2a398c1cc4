"""NIH ChestX-ray14: ``Data_Entry_2017.csv`` + ``train_val_list.txt``/``test_list.txt``.

Images sit in ``images/`` or in the twelve ``images_0XX/images/`` folders of the NIH
download; both are found. The official split is patient-level train_val/test; a
validation set is carved out of train_val by patient hash. Labels are the 14 findings
plus ``No Finding``, 1/0 (the NLP labels have no uncertain class). No reports.
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
    find_file,
    read_table,
    require_columns,
    text,
)
from radpair.data.adapters.registry import ADAPTERS

FINDINGS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]  # fmt: skip
LABELS = FINDINGS + ["No Finding"]


def _image_locations(root: Path) -> dict[str, str]:
    """file name -> path relative to root, over images/ and images_0XX/images/."""
    dirs = [root / "images"] + sorted(p / "images" for p in root.glob("images_*") if (p / "images").is_dir())
    dirs += sorted(p for p in root.glob("images_*") if p.is_dir() and not (p / "images").is_dir())
    found: dict[str, str] = {}
    for d in dirs:
        if d.is_dir():
            rel = d.relative_to(root).as_posix()
            with os.scandir(d) as it:
                for entry in it:
                    found.setdefault(entry.name, f"{rel}/{entry.name}")
    return found


def _read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


@ADAPTERS.register("chestxray14")
class ChestXray14(DatasetAdapter):
    name = "chestxray14"
    summary = "NIH ChestX-ray14 Data_Entry_2017.csv with official train_val/test lists"
    uses = frozenset()

    def load(self, root: Path, options: AdapterOptions) -> AdapterResult:
        notes: list[str] = []
        entries_path = find_file(root, ["Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"], "ChestX-ray14 label file")
        df = read_table(entries_path)
        require_columns(df, ["Image Index", "Finding Labels", "Patient ID"], entries_path)
        names = df["Image Index"].str.strip()
        findings = text(df["Finding Labels"]).str.split("|")
        unknown = sorted({f.strip() for fs in findings for f in fs if f.strip()} - set(LABELS))
        if unknown:
            notes.append(f"unrecognised finding names ignored: {unknown[:5]}")
        sets = [{f.strip() for f in fs} for fs in findings]

        locations = _image_locations(root) if not options.image_root else {}
        paths = names.map(lambda n: locations.get(n, f"images/{n}"))
        if locations and (paths.str.startswith("images/") & ~names.isin(locations)).any():
            notes.append(f"{int((~names.isin(locations)).sum())} image(s) not found under images*/")

        split = pd.Series("", index=df.index, dtype=object)
        tv, te = root / "train_val_list.txt", root / "test_list.txt"
        if tv.is_file() and te.is_file():
            train_val, test = _read_list(tv), _read_list(te)
            split = np.where(names.isin(test), "test", np.where(names.isin(train_val), "train", ""))
        else:
            notes.append("train_val_list.txt/test_list.txt not found; a hashed patient split is used")
        followup = text(df.get("Follow-up #", pd.Series("", index=df.index)))
        patient = df["Patient ID"].str.strip()
        table = pd.DataFrame(
            {
                "path": paths.to_numpy(),
                "image_id": names.map(lambda n: re.sub(r"\.png$", "", n)).to_numpy(),
                "patient_id": patient.to_numpy(),
                "study_id": (patient + "_" + followup).to_numpy(),
                "view": text(df.get("View Position", pd.Series("", index=df.index))).to_numpy(),
                "split": split,
                "report": "",
            }
        )
        for label in LABELS:
            table[label] = np.array([1.0 if label in s else 0.0 for s in sets], dtype=np.float32)
        return AdapterResult(table, list(LABELS), root, notes)
