"""The contract every dataset adapter fulfils, and the options they share.

An adapter only *describes* a dataset: it turns the dataset's own CSV/XML/folder layout
into one table with the same columns for every source (``RECORD_COLUMNS`` plus label
columns). View filtering, split assignment and the patient-leak check are applied
afterwards by :func:`radpair.data.adapters.build.build_index`, identically for all.
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from radpair.data.adapters.labels import UncertaintyPolicy
from radpair.errors import ConfigError, DataError, closest, unknown_choice_message

# path: image file relative to the adapter's image root (or absolute)
RECORD_COLUMNS = ["path", "image_id", "patient_id", "study_id", "view", "split", "report"]


class ViewFilter(str, Enum):
    """Which projections to keep; most CXR encoders are trained on frontal views only."""

    FRONTAL = "frontal"  # known PA/AP views only
    FRONTAL_OR_UNKNOWN = "frontal_or_unknown"  # also rows whose view is not recorded
    ALL = "all"


# Normalised (upper-case) view names counted as frontal. Decubitus, axial and oblique
# projections are not, even when their name starts with AP/PA.
FRONTAL_VIEWS = frozenset(
    {"PA", "AP", "FRONTAL", "AP SUPINE", "AP ERECT", "AP SEMI ERECT", "AP SEMI-ERECT", "PA ERECT", "POSTERO_ANTERIOR", "ANTERO_POSTERIOR"}
)
LATERAL_ALIASES = {"L": "LATERAL", "LAT": "LATERAL", "LL": "LL", "RL": "RL", "LATERAL": "LATERAL"}


def normalise_view(values: pd.Series) -> pd.Series:
    """Upper-case, trimmed view names; missing values become '' (unknown)."""
    out = values.astype("object").where(values.notna(), "").astype(str).str.strip().str.upper()
    out = out.replace({"NAN": "", "NONE": "", "?": "", "UNKNOWN": ""})
    return out.map(lambda v: LATERAL_ALIASES.get(v, v))


def is_frontal(views: pd.Series) -> pd.Series:
    return views.isin(FRONTAL_VIEWS)


@dataclass
class AdapterOptions:
    """Options shared by all adapters; each adapter declares which of them it reads.

    Setting an option the chosen adapter ignores is an error (a ``--label-columns`` given to
    ``chexpert`` is a mistake, not a no-op).
    """

    image_root: str | None = None  # images elsewhere than the metadata (e.g. IU PNG folder)
    views: ViewFilter | None = None  # None: the adapter's default
    uncertainty: UncertaintyPolicy = UncertaintyPolicy.KEEP
    label_source: str | None = None  # mimic: chexpert | negbio | none
    reports: str | None = None  # mimic: reports folder or mimic-cxr-reports.zip
    metadata_root: str | None = None  # mimic_cxr_dicom: folder with the MIMIC-CXR-JPG CSVs
    edema_root: str | None = None  # folder with the edema severity CSVs
    csv: str | None = None  # generic_csv / covid: the metadata file
    image_column: str | None = None
    text_column: str | None = None
    label_columns: list[str] | None = None
    patient_column: str | None = None
    study_column: str | None = None
    view_column: str | None = None
    split_column: str | None = None
    patient_regex: str | None = None  # folder / generic: patient id from the file name
    image_ext: str | None = None  # mimic_cxr_jpg: jpg (default) or png (16-bit conversions)

    def __post_init__(self) -> None:
        if self.views is not None and not isinstance(self.views, ViewFilter):
            try:
                self.views = ViewFilter(self.views)
            except ValueError:
                raise ConfigError(unknown_choice_message("view filter", str(self.views), [v.value for v in ViewFilter])) from None
        if not isinstance(self.uncertainty, UncertaintyPolicy):
            self.uncertainty = UncertaintyPolicy.parse(self.uncertainty)

    def set_fields(self) -> list[str]:
        """Names of options that differ from their defaults (what the user asked for)."""
        defaults = AdapterOptions()
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(defaults, f.name)]

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, Enum) else value
        return out


# options any adapter accepts (they are handled generically)
COMMON_OPTIONS = frozenset({"image_root", "views"})


@dataclass
class AdapterResult:
    """What an adapter returns: the raw table and what its label columns are."""

    table: pd.DataFrame
    label_columns: list[str]
    image_root: Path
    notes: list[str] = field(default_factory=list)
    # canonical form of ids in external split files (e.g. IU's "CXR1_1_IM-0001" spelling)
    split_key: Any = None


class DatasetAdapter:
    """Base class: subclasses set ``name``/``uses`` and implement :meth:`load`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    default_views: ClassVar[ViewFilter] = ViewFilter.FRONTAL
    uses: ClassVar[frozenset[str]] = frozenset()

    def check_options(self, options: AdapterOptions) -> None:
        allowed = self.uses | COMMON_OPTIONS
        for name in options.set_fields():
            if name not in allowed and name != "uncertainty":
                raise ConfigError(f"option {name!r} is not used by dataset {self.name!r} (it reads: {', '.join(sorted(allowed))})")
        if options.uncertainty is not UncertaintyPolicy.KEEP and "uncertainty" not in self.uses:
            raise ConfigError(f"dataset {self.name!r} has no uncertain labels; drop --uncertainty")

    def load(self, root: Path, options: AdapterOptions) -> AdapterResult:
        raise NotImplementedError


# ---------------------------------------------------------------- helpers for adapters


def find_file(root: Path, names: Iterable[str], what: str) -> Path:
    """First existing file among ``names`` (relative to root), plain or gzipped."""
    tried = []
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            tried.append(candidate.name)
            if candidate.is_file():
                return candidate
    present = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    hint = closest(tried[0], present) if present and tried else None
    msg = f"{root}: no {what} found (looked for {', '.join(tried)})"
    if hint:
        msg += f"; did you mean {hint!r}?"
    raise DataError(msg)


def maybe_file(root: Path, names: Iterable[str]) -> Path | None:
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_table(path: Path, **kwargs: Any) -> pd.DataFrame:
    """CSV (plain or .gz) with every column as text; errors name the file."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot read as CSV ({type(exc).__name__}: {exc})") from None


def require_columns(df: pd.DataFrame, columns: Iterable[str], source: Path | str) -> None:
    for col in columns:
        if col not in df.columns:
            hint = closest(col, [str(c) for c in df.columns])
            msg = f"{source}: missing column {col!r}"
            if hint:
                msg += f"; did you mean {hint!r}?"
            raise DataError(msg + f" (columns: {', '.join(map(str, df.columns))})")


def text(series: pd.Series) -> pd.Series:
    """Object strings with missing values as ''."""
    return series.astype("object").where(series.notna(), "").astype(str)


def empty_labels(n: int) -> pd.DataFrame:
    return pd.DataFrame(index=range(n))


def as_label_frame(df: pd.DataFrame, columns: list[str], source: Path | str) -> pd.DataFrame:
    """Label columns as float32 with 1/0/-1/NaN (or other numbers, e.g. ordinal grades)."""
    out = {}
    for col in columns:
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().sum() == df[col].isna().sum():  # nothing failed to parse (the usual case)
            out[col] = values.astype(np.float32)
            continue
        bad = values.isna() & df[col].notna() & (text(df[col]).str.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{source}: label column {col!r} has non-numeric value {df[col].iloc[row]!r} (row {row + 2})")
        out[col] = values.astype(np.float32)
    return pd.DataFrame(out, index=df.index)
