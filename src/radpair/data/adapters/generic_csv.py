"""A hospital's own export: any CSV with an image-path column, and optionally text/labels.

``--csv FILE --image-column C [--text-column C] [--label-columns A,B]
[--patient-column C] [--study-column C] [--view-column C] [--split-column C]``.
Image paths are relative to ``--root`` (or ``--image-root``) unless absolute. Labels may
be numbers (1/0/-1/blank) or positive/negative/uncertain words. Without a patient column
``--patient-regex`` extracts one from the path; otherwise each image is its own patient.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from radpair.data.adapters.base import (
    AdapterOptions,
    AdapterResult,
    DatasetAdapter,
    ViewFilter,
    as_label_frame,
    read_table,
    require_columns,
    text,
)
from radpair.data.adapters.folder import patient_ids
from radpair.data.adapters.registry import ADAPTERS
from radpair.errors import ConfigError, DataError

WORD_LABELS = {
    "positive": "1", "pos": "1", "true": "1", "yes": "1", "present": "1",
    "negative": "0", "neg": "0", "false": "0", "no": "0", "absent": "0",
    "uncertain": "-1", "possible": "-1",
}  # fmt: skip


@ADAPTERS.register("generic_csv")
class GenericCsv(DatasetAdapter):
    name = "generic_csv"
    summary = "any CSV: --csv, --image-column, --text-column, --label-columns, ..."
    default_views = ViewFilter.ALL
    uses = frozenset(
        {"csv", "image_column", "text_column", "label_columns", "patient_column", "study_column", "view_column",
         "split_column", "patient_regex", "uncertainty"}
    )  # fmt: skip

    def load(self, root: Path, options: AdapterOptions) -> AdapterResult:
        if not options.csv:
            raise ConfigError("dataset 'generic_csv' needs --csv FILE (relative to --root or absolute)")
        if not options.image_column:
            raise ConfigError("dataset 'generic_csv' needs --image-column (the column with image paths)")
        path = Path(options.csv) if Path(options.csv).is_absolute() else root / options.csv
        if not path.is_file():
            raise DataError(f"CSV file {path} does not exist")
        df = read_table(path)
        wanted = [options.image_column] + [
            c for c in (options.text_column, options.patient_column, options.study_column, options.view_column, options.split_column) if c
        ] + list(options.label_columns or [])
        require_columns(df, wanted, path)
        notes: list[str] = []

        paths = text(df[options.image_column]).str.strip()
        if options.patient_column:
            patient = text(df[options.patient_column]).str.strip()
        else:
            patient, unmatched = patient_ids(paths, options.patient_regex)
            if not options.patient_regex:
                notes.append("no --patient-column/--patient-regex: each image is its own patient")
            elif unmatched:
                notes.append(f"--patient-regex matched no patient in {unmatched} path(s); their file stem is used")
        image_id = paths.str.replace(r"\.[^./]+$", "", regex=True)
        table = pd.DataFrame(
            {
                "path": paths,
                "image_id": image_id,
                "patient_id": patient,
                "study_id": text(df[options.study_column]).str.strip() if options.study_column else image_id,
                "view": text(df[options.view_column]) if options.view_column else "",
                "split": text(df[options.split_column]) if options.split_column else "",
                "report": text(df[options.text_column]) if options.text_column else "",
            }
        )
        label_cols = list(options.label_columns or [])
        if label_cols:
            words = df[label_cols].apply(lambda s: s.map(lambda v: WORD_LABELS.get(str(v).strip().lower(), v) if isinstance(v, str) else v))
            labels = as_label_frame(words, label_cols, path)
            for col in label_cols:
                table[col] = labels[col].to_numpy(dtype=np.float32)
        return AdapterResult(table, label_cols, root, notes)
