"""Patient-level train/val/test splits: official where the dataset has one, else hashed.

A patient's images must all fall in one split, or test scores measure memorised anatomy.
Hashed splits use SHA-256 of the patient id (never Python's salted ``hash``), so the same
patients land in the same split on every machine and every run; the assignment is also
saved as a manifest that can be passed back with ``--split-file`` to freeze it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radpair.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
SPLIT_KEYS = ("image_id", "study_id", "patient_id")  # most specific first


@dataclass(frozen=True)
class SplitSpec:
    """How to split when the dataset has no official split (or when told to ignore it)."""

    seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    file: str | None = None  # CSV with a split column and one of image_id/study_id/patient_id
    unassigned: str = "drop"  # rows the split file does not cover: drop | hash
    ignore_official: bool = False

    def __post_init__(self) -> None:
        fr = tuple(float(f) for f in self.fractions)
        if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise ConfigError(f"split fractions must be three non-negative numbers summing to 1, got {self.fractions}")
        object.__setattr__(self, "fractions", fr)
        if self.unassigned not in ("drop", "hash"):
            raise ConfigError(f"unassigned must be 'drop' or 'hash', got {self.unassigned!r}")


@dataclass
class SplitInfo:
    """How the splits of a built index were obtained; stored in ``meta["split"]``."""

    source: str  # official | official+hashed_val | hashed | file | file+hashed
    seed: int | None = None
    fractions: list[float] | None = None
    file: str | None = None
    dropped_unassigned: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def normalise_split(values: pd.Series, source: str = "split column") -> pd.Series:
    """Map 'validate'/'valid'/... onto train/val/test; '' stays '' (unassigned)."""
    raw = values.astype("object").where(values.notna(), "").astype(str).str.strip().str.lower()
    mapped = raw.map(lambda v: SPLIT_ALIASES.get(v, v))
    unknown = sorted(set(mapped) - set(SPLITS) - {""})
    if unknown:
        raise DataError(f"{source}: unknown split names {unknown[:5]} (expected train/val/test or validate/valid)")
    return mapped


def unit_hash(keys: pd.Series, seed: int) -> np.ndarray:
    """Deterministic uniform [0, 1) value per key."""
    prefix = f"radpair-split:{seed}:".encode()
    return np.array(
        [int.from_bytes(hashlib.sha256(prefix + str(k).encode()).digest()[:8], "big") / 2.0**64 for k in keys],
        dtype=np.float64,
    )


def hashed_split(patients: pd.Series, seed: int, fractions: tuple[float, float, float]) -> pd.Series:
    """train/val/test per row, decided by the row's patient id alone."""
    unique = pd.Series(patients.unique())
    u = unit_hash(unique, seed)
    edges = np.cumsum(fractions)
    labels = np.where(u < edges[0], "train", np.where(u < edges[1], "val", "test"))
    lookup = dict(zip(unique, labels))
    return patients.map(lookup).astype(object)


def _carve_val(table: pd.DataFrame, spec: SplitSpec) -> pd.Series:
    """Official train/test without val (e.g. ChestX-ray14): take val from train patients."""
    f_train, f_val, _ = spec.fractions
    frac = f_val / (f_train + f_val) if (f_train + f_val) > 0 else 0.0
    split = table["split"].copy()
    train = split == "train"
    sub = hashed_split(table.loc[train, "patient_id"], spec.seed, (1.0 - frac, frac, 0.0))
    split.loc[train] = sub.to_numpy()
    return split


def _read_split_file(path: Path) -> tuple[str, dict[str, str]]:
    if not path.is_file():
        raise DataError(f"split file {path} does not exist")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "split" not in df.columns:
        raise DataError(f"{path}: needs a 'split' column (columns: {', '.join(df.columns)})")
    key = next((k for k in SPLIT_KEYS if k in df.columns), None)
    if key is None:
        raise DataError(f"{path}: needs one of the columns {', '.join(SPLIT_KEYS)} to match rows (columns: {', '.join(df.columns)})")
    splits = normalise_split(df["split"], str(path))
    return key, dict(zip(df[key].astype(str), splits))


def assign_splits(
    table: pd.DataFrame, spec: SplitSpec, split_key: Callable[[str], str] | None = None
) -> tuple[pd.DataFrame, SplitInfo]:
    """Fill ``table['split']`` (official, file or hashed) and describe how it was done."""
    table = table.copy()
    official = normalise_split(table["split"], "official split")
    has_official = official != ""
    if spec.file:
        key, mapping = _read_split_file(Path(spec.file))
        keys = table[key].astype(str)
        if split_key is not None:
            mapping = {split_key(k): v for k, v in mapping.items()}
            keys = keys.map(split_key)
        split = keys.map(mapping).fillna("")
        missing = split == ""
        info = SplitInfo(source="file", file=str(spec.file))
        if missing.any():
            if spec.unassigned == "hash":
                split.loc[missing] = hashed_split(table.loc[missing, "patient_id"], spec.seed, spec.fractions).to_numpy()
                info.source, info.seed, info.fractions = "file+hashed", spec.seed, list(spec.fractions)
            else:
                info.dropped_unassigned = int(missing.sum())
                table, split = table.loc[~missing], split.loc[~missing]
        table["split"] = split.to_numpy()
    elif has_official.all() and len(table) and not spec.ignore_official:
        table["split"] = official.to_numpy()
        info = SplitInfo(source="official")
        if not (table["split"] == "val").any() and (table["split"] == "train").any():
            table["split"] = _carve_val(table, spec).to_numpy()
            info = SplitInfo(source="official+hashed_val", seed=spec.seed, fractions=list(spec.fractions))
    elif has_official.any() and not spec.ignore_official:
        n = int((~has_official).sum())
        raise DataError(
            f"official split given for only {int(has_official.sum())} of {len(table)} rows ({n} without); "
            "fill it in, pass --split-file, or --ignore-official-split to hash all patients"
        )
    else:
        table["split"] = hashed_split(table["patient_id"], spec.seed, spec.fractions).to_numpy()
        info = SplitInfo(source="hashed", seed=spec.seed, fractions=list(spec.fractions))
    info.counts = {s: int((table["split"] == s).sum()) for s in SPLITS}
    return table.reset_index(drop=True), info


def check_patient_splits(table: pd.DataFrame, source: str = "index") -> None:
    """Raise if any patient has rows in more than one split (a train/test leak)."""
    per_patient = table.groupby("patient_id", sort=True)["split"].nunique()
    leaking = per_patient[per_patient > 1]
    if len(leaking):
        examples = []
        for pid in leaking.index[:5]:
            splits = sorted(table.loc[table["patient_id"] == pid, "split"].unique())
            examples.append(f"{pid} ({'/'.join(splits)})")
        raise DataError(
            f"{source}: {len(leaking)} patient(s) appear in more than one split, e.g. {', '.join(examples)}; "
            "splits must be patient-level (use a patient-keyed --split-file or the hashed split)"
        )


def split_manifest(table: pd.DataFrame) -> pd.DataFrame:
    """patient_id -> split, sorted: the file to pass back as ``--split-file``."""
    manifest = table[["patient_id", "split"]].drop_duplicates().sort_values(["patient_id", "split"], kind="stable")
    return manifest.reset_index(drop=True)
