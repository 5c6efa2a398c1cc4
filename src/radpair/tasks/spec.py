"""Named downstream tasks, declared as data, and the labels they read from a corpus.

A task says which columns hold its labels, what they mean (:class:`LabelSchema`), which
views it uses, and where its training and its test labels come from. Keeping this as data
(``builtin.yaml``, or a user's YAML file) rather than as flags means a results file can
record exactly what was measured, and two runs of "findings7" are the same task.

Why training and test labels have separate sources: the papers train on labels read from
report text by rules (about 89 % right against experts) and test on expert labels. On the
synthetic corpus the drawn findings play the experts, and radpair's own labelers read the
reports, so the label noise a user will meet is part of the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

from radpair.config import from_dict, to_dict
from radpair.errors import ConfigError, DataError, LabelFallbackWarning, ResourceMissing, unknown_choice_message
from radpair.tasks.schema import LabelSchema, SchemaKind, TaskLabels

LABEL_SOURCES = ("truth", "index", "report")
BUILTIN_FILE = Path(__file__).with_name("builtin.yaml")


@dataclass
class ReportColumn:
    """One task column read from report text: a labeler's output column, optionally
    thresholded into 0/1 (e.g. edema severity >= 1 means edema present)."""

    labeler: str
    column: str
    threshold: float | None = None
    fallback: dict[str, Any] | None = None
    """Another ``{labeler, column, threshold}`` for when this labeler's resources are not
    installed (the CheXpert phrase lists come from a chexpert-labeler checkout that radpair
    does not ship). Using it is announced and written into the label-source description,
    and its labels differ, so cached results keyed on the labels are never mixed up."""

    def __post_init__(self) -> None:
        if self.fallback is not None:
            self.fallback = to_dict(_as(ReportColumn, self.fallback, f"fallback of {self.labeler}:{self.column}"))


@dataclass
class SourcePolicy:
    uncertain: str = "ignore"
    blank: str = "ignore"


@dataclass
class TaskSpec:
    """One downstream task; see ``builtin.yaml`` for documented examples."""

    name: str = ""
    description: str = ""
    schema: str = "multilabel"
    columns: list[str] = field(default_factory=list)
    test_columns: list[str] = field(default_factory=list)
    """Columns of the test labels when they differ (e.g. consensus grades); default ``columns``."""
    levels: list[str] = field(default_factory=list)
    uncertain: str = "ignore"
    blank: str = "ignore"
    policies: dict[str, SourcePolicy] = field(default_factory=dict)
    """Per label source overrides of ``uncertain``/``blank`` (report labels: blank = absent)."""
    derive: str = ""
    """``any``: one binary label, positive when any column is (e.g. ``abnormal``)."""
    derived: dict[str, str] = field(default_factory=dict)
    """Columns computed from the others, e.g. ``{no_finding: none}``: positive when no other
    column of the task is (CheXpert's "No Finding")."""
    views: list[str] = field(default_factory=list)
    train_labels: str = "truth"
    test_labels: str = "truth"
    report: dict[str, ReportColumn] = field(default_factory=dict)
    train_split: str = "train"
    validate_split: str = "validate"
    test_split: str = "test"

    def __post_init__(self) -> None:
        # the typed loader keeps dict values as plain mappings; make them dataclasses here
        self.report = {str(k): _as(ReportColumn, v, f"task {self.name!r} report.{k}") for k, v in self.report.items()}
        self.policies = {str(k): _as(SourcePolicy, v, f"task {self.name!r} policies.{k}") for k, v in self.policies.items()}

    def validate(self) -> None:
        if not self.columns:
            raise ConfigError(f"task {self.name!r}: 'columns' is empty")
        kind = SchemaKind.parse(self.schema)
        if self.derive not in ("", "any"):
            raise ConfigError(unknown_choice_message(f"task {self.name!r} derive rule", self.derive, ["any"]))
        if self.derive and kind is not SchemaKind.BINARY:
            raise ConfigError(f"task {self.name!r}: derive {self.derive!r} makes a binary label; set schema: binary")
        for key in ("train_labels", "test_labels"):
            if getattr(self, key) not in LABEL_SOURCES:
                raise ConfigError(unknown_choice_message(f"task {self.name!r} {key}", getattr(self, key), LABEL_SOURCES))
        for source in self.policies:
            if source not in LABEL_SOURCES:
                raise ConfigError(unknown_choice_message(f"task {self.name!r} policies source", source, LABEL_SOURCES))
        if "report" in (self.train_labels, self.test_labels):
            missing = [c for c in self.columns if c not in self.report and c not in self.derived]
            if missing:
                raise ConfigError(f"task {self.name!r} reads labels from reports but 'report' maps no labeler "
                                  f"to columns {missing}")
        if self.report:  # a typo in a labeler name fails here, not only on a machine that needs the fallback
            from radpair.reports.labeling.registry import LABELERS

            for col, rc in self.report.items():
                for name in [rc.labeler] + ([rc.fallback["labeler"]] if rc.fallback else []):
                    if name not in LABELERS:
                        raise ConfigError(unknown_choice_message(f"task {self.name!r} report.{col} labeler", name,
                                                                 LABELERS.names()))
        for col, rule in self.derived.items():
            if rule != "none":
                raise ConfigError(unknown_choice_message(f"task {self.name!r} derived rule for {col!r}", rule, ["none"]))
            if col not in self.columns:
                raise ConfigError(f"task {self.name!r}: derived column {col!r} is not one of its columns")
        if self.test_columns and len(self.test_columns) != len(self.columns):
            raise ConfigError(f"task {self.name!r}: test_columns must match columns one to one")
        self.schema_for("truth")  # checks levels against the kind
        if kind.is_categorical:
            for src in LABEL_SOURCES:
                sch = self.schema_for(src)
                if sch.uncertain.value != "ignore":
                    raise ConfigError(f"task {self.name!r}: an uncertain label of a {kind.value} task is missing "
                                      f"(uncertain: ignore); {sch.uncertain.value!r} has no meaning there")

    # ---- derived views ------------------------------------------------------------------
    @property
    def kind(self) -> SchemaKind:
        return SchemaKind.parse(self.schema)

    @property
    def output_columns(self) -> list[str]:
        """Column names of the task's labels after deriving (``abnormal`` for derive: any)."""
        return [self.name or "derived"] if self.derive else list(self.columns)

    def schema_for(self, source: str) -> LabelSchema:
        pol = self.policies.get(source)
        uncertain = pol.uncertain if pol else self.uncertain
        blank = pol.blank if pol else self.blank
        return LabelSchema.make(self.schema, self.levels, uncertain, blank)

    def with_sources(self, train: str | None = None, test: str | None = None) -> "TaskSpec":
        """A copy reading training/test labels from other sources (CLI ``--train-labels``)."""
        data = {**self.__dict__}
        if train:
            data["train_labels"] = train
        if test:
            data["test_labels"] = test
        spec = TaskSpec(**data)
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        from radpair.config import to_dict

        return to_dict(self)


def _as(cls, value: Any, where: str):
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    try:
        return from_dict(cls, value, prefix=where)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@lru_cache(maxsize=1)
def _builtin_raw() -> dict[str, Any]:
    return yaml.safe_load(BUILTIN_FILE.read_text())


def task_names() -> list[str]:
    return sorted(_builtin_raw())


def _spec_from_mapping(name: str, data: Any, where: str) -> TaskSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: task {name!r} must be a mapping of keys")
    data = {**data}
    data.setdefault("name", name)
    try:
        spec = from_dict(TaskSpec, data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: task {name!r}: {exc}") from None
    try:
        spec.validate()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return spec


def load_task(name_or_file: str | Path | TaskSpec) -> TaskSpec:
    """A built-in task by name, or the single task of a YAML file (``{name: {...}}`` or flat keys)."""
    if isinstance(name_or_file, TaskSpec):
        return name_or_file
    text = str(name_or_file)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"task file {text!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"task file {text!r} is not valid YAML: {exc}") from None
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), dict):
            (name, body), = data.items()
            return _spec_from_mapping(str(name), body, str(path))
        return _spec_from_mapping(path.stem, data, str(path))
    raw = _builtin_raw()
    if text not in raw:
        raise ConfigError(unknown_choice_message("task", text, raw))
    return _spec_from_mapping(text, raw[text], str(BUILTIN_FILE))


# ---- reading labels from a corpus ------------------------------------------------------------
def resolve_split(corpus, name: str) -> str:
    """The corpus's name for a split: real datasets say ``val``, the synthetic corpus ``validate``."""
    present = set(corpus.index["split"].astype(str).unique())
    if name in present:
        return name
    aliases = {"validate": ("val", "valid", "validation"), "val": ("validate", "valid", "validation")}
    for alt in aliases.get(name, ()):
        if alt in present:
            return alt
    raise DataError(f"{corpus.root}: no {name!r} split (splits: {sorted(present)})")


def _report_labels(texts: Sequence[str], spec: TaskSpec, columns: Sequence[str]) -> tuple[np.ndarray, str]:
    """Run each needed labeler once per distinct report text; (N, len(columns)) floats and a
    note naming any fallback labeler that stood in for one whose resources are missing."""
    import warnings

    from radpair.reports.labeling import get_labeler

    texts = pd.Series(list(texts), dtype=object).fillna("").astype(str)
    codes, uniques = pd.factorize(texts)
    out = np.full((len(texts), len(columns)), np.nan)
    by_labeler: dict[str, pd.DataFrame] = {}
    unavailable: dict[str, str] = {}
    stand_ins: list[str] = []

    def labelled(name: str) -> pd.DataFrame | None:
        if name not in by_labeler and name not in unavailable:
            try:
                by_labeler[name] = get_labeler(name).label_many(list(uniques))
            except ResourceMissing as exc:  # only a missing install; any other error stops the run
                unavailable[name] = str(exc)
        return by_labeler.get(name)

    for j, col in enumerate(columns):
        rc = spec.report[col]
        frame = labelled(rc.labeler)
        if frame is None:
            if not rc.fallback:
                raise ConfigError(f"task {spec.name!r}, column {col!r}: {unavailable[rc.labeler]}")
            rc_used = ReportColumn(**rc.fallback)
            frame = labelled(rc_used.labeler)
            if frame is None:
                raise ConfigError(f"task {spec.name!r}, column {col!r}: {unavailable[rc.labeler]}; its fallback "
                                  f"failed too: {unavailable[rc_used.labeler]}")
            stand_ins.append(f"{col} <- {rc_used.labeler}:{rc_used.column}")
        else:
            rc_used = rc
        if rc_used.column not in frame.columns:
            raise ConfigError(f"task {spec.name!r}: labeler {rc_used.labeler!r} has no column {rc_used.column!r} "
                              f"(columns: {list(frame.columns)})")
        values = pd.to_numeric(frame[rc_used.column], errors="coerce").to_numpy(dtype=np.float64)
        if rc_used.threshold is not None:
            known = ~np.isnan(values)
            values = np.where(known, (values >= rc_used.threshold).astype(np.float64), np.nan)
        out[:, j] = values[codes]
    note = ""
    if stand_ins:
        missing = "; ".join(f"{k}: {v.split(';')[0]}" for k, v in unavailable.items())
        note = f"fallback labelers ({', '.join(stand_ins)}) because {missing}"
        warnings.warn(f"task {spec.name!r}: {note}", LabelFallbackWarning, stacklevel=3)
    return out, note


def raw_labels(corpus, spec: TaskSpec, source: str, rows: np.ndarray, columns: Sequence[str] | None = None
               ) -> tuple[np.ndarray, str]:
    """Raw float labels of ``rows`` (positions in ``corpus.index``) from ``source``, and where
    they came from (for error messages). Derived columns are computed from the others."""
    columns = list(columns or spec.columns)
    derived = [c for c in columns if c in spec.derived]
    if derived:
        base = [c for c in columns if c not in spec.derived]
        raw, where = raw_labels(corpus, spec, source, rows, base) if base else (np.zeros((len(rows), 0)), "")
        out = np.full((len(rows), len(columns)), np.nan)
        for j, c in enumerate(columns):
            if c in spec.derived:
                anyp = _derive_any(raw, spec.schema_for(source))[:, 0]
                out[:, j] = np.where(np.isnan(anyp), np.nan, np.where(anyp == 1, 0.0, np.where(anyp == -1, -1.0, 1.0)))
            else:
                out[:, j] = raw[:, base.index(c)]
        return out, where
    if source == "truth":
        if corpus.ground_truth is None:
            raise DataError(f"{corpus.root}: task {spec.name!r} wants test labels from 'truth' but the corpus has no "
                            "ground_truth.csv; use --test-labels index (the dataset's own labels)")
        frame = corpus.labels("ground_truth")
        where = f"{corpus.root / 'ground_truth.csv'}: "
    elif source == "index":
        frame = corpus.index
        where = f"{corpus.root / 'index.csv'}: "
    elif source == "report":
        texts = corpus.index["report"].to_numpy()[rows]
        values, note = _report_labels(texts, spec, columns)
        return values, f"{corpus.root / 'index.csv'} (report text, radpair labelers{'; ' + note if note else ''}): "
    else:
        raise ConfigError(unknown_choice_message("label source", source, LABEL_SOURCES))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{where}task {spec.name!r}: label columns {missing} not found "
                        f"(available: {[c for c in frame.columns if c not in ('image_id',)][:30]})")
    sub = frame.iloc[rows][columns]
    return sub.apply(lambda s: pd.to_numeric(s, errors="coerce")).to_numpy(dtype=np.float64), where


def _derive_any(raw: np.ndarray, schema: LabelSchema) -> np.ndarray:
    """Any-positive over columns, after the source's blank policy: 1 if any column is 1;
    otherwise unknown (blank) if any column is blank, since that finding may be present;
    otherwise -1 if any is uncertain; otherwise 0 (every column known negative)."""
    arr = raw.copy()
    if schema.blank.value == "negative":
        arr = np.where(np.isnan(arr), 0.0, arr)
    out = np.zeros(arr.shape[0])
    out[(arr == -1).any(axis=1)] = -1.0
    out[np.isnan(arr).any(axis=1)] = np.nan
    out[(arr == 1).any(axis=1)] = 1.0
    return out[:, None]


def task_labels(corpus, spec: TaskSpec, source: str, rows: np.ndarray, test: bool = False) -> TaskLabels:
    """Checked :class:`TaskLabels` of ``rows`` under the task's schema for ``source``."""
    columns = spec.test_columns if (test and spec.test_columns) else spec.columns
    raw, where = raw_labels(corpus, spec, source, np.asarray(rows, dtype=np.int64), columns)
    schema = spec.schema_for(source)
    if spec.derive == "any":
        bad = ~(np.isnan(raw) | np.isin(raw, (0.0, 1.0, -1.0)))
        if bad.any():
            col = columns[int(np.argwhere(bad)[0][1])]
            raise DataError(f"{where}label column {col!r} holds values {sorted(set(raw[bad].tolist()))[:8]}; "
                            "deriving 'any' needs 1, 0, -1 or empty")
        raw = _derive_any(raw, schema)
        return schema.encode(raw, spec.output_columns, where)
    # test columns (e.g. consensus grades) are scored under the training columns' names
    return schema.encode(raw, spec.output_columns, where)


__all__ = ["TaskSpec", "ReportColumn", "SourcePolicy", "LABEL_SOURCES", "load_task", "task_names", "task_labels",
           "raw_labels", "resolve_split"]
