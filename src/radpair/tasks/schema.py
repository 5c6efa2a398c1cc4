"""Label schemas: what the values of a task's label columns mean, checked where they enter.

A label column is a contract between a corpus, a loss and a metric. An ordinal edema grade
0-3 fed to a binary cross-entropy trains on targets 2 and 3 without a complaint, and a
CheXpert -1 read by ``> 0`` becomes a positive; both are silent errors that move results.
So every task names its schema, and the values are checked against it once, when the
label matrix is built, with an error that names the column and the offending values.

Representation (shared by sampling, heads, losses and :mod:`radpair.evaluation.taskmetrics`):

* ``binary`` / ``multilabel``: ``y`` (N, C) int8 0/1 and ``mask`` (N, C) bool;
  -1 (uncertain) and blank follow the CheXpert policies (U-Ignore, U-Zeros, U-Ones).
* ``multiclass`` / ``ordinal``: ``y`` (N,) int64 in [0, K) and ``mask`` (N,) bool. The raw
  input is one column of integer codes, or several 0/1 columns of which exactly one is 1
  (one-hot). Ordinal tasks train like multi-class ones (Chauhan et al. use a 4-way
  softmax) and add the dichotomised metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import numpy as np

from radpair.errors import ConfigError, DataError, unknown_choice_message
from radpair.evaluation.metrics import BlankPolicy, UncertainPolicy


class SchemaKind(str, Enum):
    BINARY = "binary"
    MULTILABEL = "multilabel"
    MULTICLASS = "multiclass"
    ORDINAL = "ordinal"

    @classmethod
    def parse(cls, value: str | "SchemaKind") -> "SchemaKind":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value))
        except ValueError:
            raise ConfigError(unknown_choice_message("label schema", str(value), [k.value for k in cls])) from None

    @property
    def is_categorical(self) -> bool:
        """One class per row (softmax), as opposed to independent binary columns (sigmoid)."""
        return self in (SchemaKind.MULTICLASS, SchemaKind.ORDINAL)


def _bad_values_message(column: str, bad: np.ndarray, allowed: str, where: str, hint: str = "") -> str:
    shown = sorted({float(v) for v in bad[:200]})[:8]
    text = f"{where}label column {column!r} holds values {shown}; a {allowed}"
    return text + (f" — {hint}" if hint else "")


@dataclass(frozen=True)
class LabelSchema:
    """The kind of a task's labels and how to read incomplete ones.

    ``levels`` names the K classes of a multi-class or ordinal task (in code order);
    ``uncertain``/``blank`` apply to binary and multi-label columns.
    """

    kind: SchemaKind
    levels: tuple[str, ...] = ()
    uncertain: UncertainPolicy = UncertainPolicy.IGNORE
    blank: BlankPolicy = BlankPolicy.IGNORE

    def __post_init__(self) -> None:
        if self.kind.is_categorical and len(self.levels) < 2:
            raise ConfigError(f"a {self.kind.value} schema needs at least two levels; got {list(self.levels)}")
        if not self.kind.is_categorical and self.levels:
            raise ConfigError(f"a {self.kind.value} schema has no levels (got {list(self.levels)})")

    @classmethod
    def make(cls, kind: str, levels: Sequence[str] = (), uncertain: str = "ignore", blank: str = "ignore") -> "LabelSchema":
        try:
            u, b = UncertainPolicy(uncertain), BlankPolicy(blank)
        except ValueError:
            raise ConfigError(
                f"label policy: uncertain={uncertain!r} (valid: {[p.value for p in UncertainPolicy]}), "
                f"blank={blank!r} (valid: {[p.value for p in BlankPolicy]})"
            ) from None
        return cls(SchemaKind.parse(kind), tuple(str(v) for v in levels), u, b)

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    def n_outputs(self, n_columns: int) -> int:
        """Width of a model's output for this schema (logits)."""
        return self.n_levels if self.kind.is_categorical else n_columns

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "levels": list(self.levels), "uncertain": self.uncertain.value,
                "blank": self.blank.value}

    # ---- reading raw values -------------------------------------------------------------
    def encode(self, raw: np.ndarray, columns: Sequence[str], where: str = "") -> "TaskLabels":
        """Raw float labels (N, len(columns)), NaN = blank, into checked :class:`TaskLabels`.

        ``where`` (e.g. ``"corpus/ground_truth.csv: "``) prefixes every error.
        """
        arr = np.asarray(raw, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        columns = [str(c) for c in columns]
        if arr.ndim != 2 or arr.shape[1] != len(columns):
            raise DataError(f"{where}labels have shape {arr.shape} for columns {columns}")
        if self.kind.is_categorical:
            return self._encode_categorical(arr, columns, where)
        return self._encode_binary(arr, columns, where)

    def _encode_binary(self, arr: np.ndarray, columns: list[str], where: str) -> "TaskLabels":
        if self.kind is SchemaKind.BINARY and arr.shape[1] != 1:
            raise DataError(f"{where}a binary task has one label column; got {columns} (use schema multilabel)")
        for c, name in enumerate(columns):
            col = arr[:, c]
            bad = ~(np.isnan(col) | np.isin(col, (0.0, 1.0, -1.0)))
            if bad.any():
                raise DataError(_bad_values_message(
                    name, col[bad], f"{self.kind.value} task needs 1, 0, -1 (uncertain) or empty", where,
                    "declare the task multiclass or ordinal with its levels"))
        blank, uncertain = np.isnan(arr), arr == -1
        known = (arr == 0) | (arr == 1)
        values = np.where(known, arr, 0.0)
        mask = known.copy()
        if self.uncertain is UncertainPolicy.ZEROS:
            mask |= uncertain
        elif self.uncertain is UncertainPolicy.ONES:
            values = np.where(uncertain, 1.0, values)
            mask |= uncertain
        if self.blank is BlankPolicy.NEGATIVE:
            mask |= blank
        return TaskLabels(self, values.astype(np.int8), mask, list(columns))

    def _encode_categorical(self, arr: np.ndarray, columns: list[str], where: str) -> "TaskLabels":
        k = self.n_levels
        if arr.shape[1] == 1 and self.blank is BlankPolicy.NEGATIVE:
            # "not mentioned" read as the first level (e.g. no edema), as for binary labels
            arr = np.where(np.isnan(arr), 0.0, arr)
        if arr.shape[1] == 1:
            col = arr[:, 0]
            present = ~np.isnan(col)
            ok = present & (col >= 0) & (col < k) & (col == np.round(col))
            # -1 (uncertain) is missing for a categorical task; anything else is an error
            bad = present & ~ok & (col != -1)
            if bad.any():
                raise DataError(_bad_values_message(
                    columns[0], col[bad], f"{self.kind.value} task with {k} levels needs integer codes 0..{k - 1}, "
                    "-1 (uncertain) or empty", where))
            y = np.where(ok, col, 0).astype(np.int64)
            return TaskLabels(self, y, ok, [columns[0]])
        if len(columns) != k:
            raise DataError(f"{where}a one-hot {self.kind.value} task needs one column per level ({k}); got {columns}")
        for c, name in enumerate(columns):
            col = arr[:, c]
            bad = ~(np.isnan(col) | np.isin(col, (0.0, 1.0, -1.0)))
            if bad.any():
                raise DataError(_bad_values_message(name, col[bad], "one-hot level column needs 1, 0, -1 or empty", where))
        ones = arr == 1
        ok = ones.sum(axis=1) == 1  # exactly one level stated; none or several is missing
        y = np.where(ok, ones.argmax(axis=1), 0).astype(np.int64)
        return TaskLabels(self, y, ok, list(columns))


@dataclass(frozen=True)
class TaskLabels:
    """Checked labels of one task for some rows; see the module docstring for the layout."""

    schema: LabelSchema
    y: np.ndarray
    mask: np.ndarray
    columns: list[str]

    @property
    def kind(self) -> str:
        return self.schema.kind.value

    @property
    def class_names(self) -> list[str]:
        """Names of the output columns: the label columns, or the levels of a categorical task."""
        return list(self.schema.levels) if self.schema.kind.is_categorical else list(self.columns)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, rows: np.ndarray) -> "TaskLabels":
        rows = np.asarray(rows, dtype=np.int64)
        return TaskLabels(self.schema, self.y[rows], self.mask[rows], self.columns)

    @property
    def usable_rows(self) -> np.ndarray:
        """(N,) rows with at least one usable label: only these count towards a budget."""
        return self.mask.any(axis=1) if self.mask.ndim == 2 else self.mask.copy()

    def requirements(self) -> tuple[np.ndarray, list[str]]:
        """(N, R) bool: which rows satisfy each thing a usable subset should contain.

        Multi-label: a positive and a negative of every class; categorical: every level.
        """
        if self.schema.kind.is_categorical:
            has = np.stack([(self.y == k) & self.mask for k in range(self.schema.n_levels)], axis=1)
            return has, [f"level {name!r}" for name in self.schema.levels]
        pos = (self.y == 1) & self.mask
        neg = (self.y == 0) & self.mask
        names = [f"a positive of {c!r}" for c in self.columns] + [f"a negative of {c!r}" for c in self.columns]
        return np.concatenate([pos, neg], axis=1), names

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        """(targets, mask) as float32 for a loss: (N, C) 0/1 or (N,) class codes with (N,) mask."""
        return self.y.astype(np.float32 if self.y.ndim == 2 else np.int64), self.mask.astype(bool)


__all__ = ["LabelSchema", "SchemaKind", "TaskLabels"]
