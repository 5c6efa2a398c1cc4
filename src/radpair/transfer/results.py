"""What a transfer run found, as one JSON-serialisable object (``results.json``).

Two kinds of uncertainty are reported and kept apart, because they answer different
questions: variability over *which* images were labelled (the spread and t-interval over
repeats), and test-set sampling (patient-bootstrap intervals). Comparisons between arms
are paired: repeat r of every arm used the same training and validation images and all
arms are scored on the same bootstrap draws of test patients, so a difference carries
neither the subset noise nor the test noise twice (see :mod:`radpair.evaluation.paired`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from radpair.errors import DataError

FORMAT = "radpair-transfer"
VERSION = 1
SUMMARY_METRICS = ("macro_auc", "macro_ap", "macro_f1", "accuracy", "macro_accuracy", "macro_ece", "ece",
                   "ovr_macro_auc", "macro_precision", "macro_recall")
"""Summarised for every task; an ordinal task adds its dichotomised AUCs (``auc_0|123`` ...)."""


def _f(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


@dataclass
class CellResult:
    """One (arm, budget, repeat): what was chosen on validation and how it scored on test."""

    arm: str
    budget: str
    repeat: int
    n_train: int
    n_val: int
    chosen: dict[str, Any]
    selection: list[dict[str, Any]]
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: list[float] | None = None
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    subset: dict[str, str] = field(default_factory=dict)
    """SHA-256 of the training and validation image ids: equal across arms of one repeat."""

    def value(self, metric: str) -> float:
        v = self.metrics.get("values", {}).get(metric)
        return math.nan if v is None else float(v)

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "budget": self.budget, "repeat": self.repeat, "n_train": self.n_train,
                "n_val": self.n_val, "chosen": self.chosen, "selection": self.selection,
                "seconds": round(self.seconds, 2), "thresholds": self.thresholds, "files": self.files,
                "notes": self.notes, "subset": self.subset, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CellResult":
        return cls(d["arm"], str(d["budget"]), int(d["repeat"]), int(d["n_train"]), int(d["n_val"]), d["chosen"],
                   d["selection"], float(d["seconds"]), d.get("metrics", {}), d.get("thresholds"), d.get("files", {}),
                   d.get("notes", []), d.get("subset", {}))


def summarise(cells: list[CellResult], metric: str, confidence: float = 0.95) -> dict[str, Any]:
    """Mean, range and t-interval over repeats of ``metric``, plus the mean test CI."""
    vals = np.array([c.value(metric) for c in cells], dtype=float)
    ok = vals[~np.isnan(vals)]
    out: dict[str, Any] = {"metric": metric, "n_repeats": int(ok.size), "values": [_f(v) for v in vals]}
    if not ok.size:
        return {**out, "mean": None}
    mean = float(ok.mean())
    out.update({"mean": mean, "min": float(ok.min()), "max": float(ok.max())})
    if ok.size > 1:
        sd = float(ok.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, ok.size - 1)) * sd / math.sqrt(ok.size)
        out.update({"sd": sd, "repeat_ci": [mean - half, mean + half]})
    cis = [c.metrics.get("ci", {}).get(metric) for c in cells]
    cis = [ci for ci in cis if ci and ci[0] is not None and ci[1] is not None]
    if cis:
        out["test_ci_mean"] = [float(np.mean([ci[0] for ci in cis])), float(np.mean([ci[1] for ci in cis]))]
    return out


@dataclass
class TransferResult:
    """Everything ``results.json`` holds; built by :func:`radpair.transfer.run_transfer`."""

    task: dict[str, Any]
    class_names: list[str]
    arms: list[dict[str, Any]]
    budgets: list[str]
    repeats: int
    config: dict[str, Any]
    subsets: list[dict[str, Any]] = field(default_factory=list)
    cells: list[CellResult] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    paired: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    primary_metric: str = "macro_auc"

    # ---- reading --------------------------------------------------------------------------
    @property
    def arm_keys(self) -> list[str]:
        return [a["key"] for a in self.arms]

    def arm_label(self, key: str) -> str:
        for a in self.arms:
            if a["key"] == key:
                return a["label"]
        raise DataError(f"no arm {key!r} in this result (arms: {self.arm_keys})")

    def cells_for(self, arm: str, budget: str) -> list[CellResult]:
        return sorted((c for c in self.cells if c.arm == arm and c.budget == budget), key=lambda c: c.repeat)

    def summary(self, arm: str, budget: str, metric: str | None = None) -> dict[str, Any]:
        metric = metric or self.primary_metric
        for s in self.summaries:
            if s["arm"] == arm and s["budget"] == budget and s["metric"] == metric:
                return s
        raise DataError(f"no summary for arm {arm!r}, budget {budget!r}, metric {metric!r}")

    def mean(self, arm: str, budget: str, metric: str | None = None) -> float:
        v = self.summary(arm, budget, metric).get("mean")
        return math.nan if v is None else float(v)

    def paired_difference(self, a: str, b: str, budget: str, metric: str | None = None) -> dict[str, Any]:
        """The paired comparison ``a − b`` (either order is found; the sign follows a − b)."""
        metric = metric or self.primary_metric
        for p in self.paired:
            if p["budget"] != budget or p["metric"] != metric:
                continue
            if p["arm_a"] == a and p["arm_b"] == b:
                return p
            if p["arm_a"] == b and p["arm_b"] == a:
                return _flip(p)
        raise DataError(f"no paired comparison of {a!r} and {b!r} at budget {budget!r} for {metric!r}")

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "task": self.task, "class_names": self.class_names,
                "primary_metric": self.primary_metric, "arms": self.arms, "budgets": self.budgets,
                "repeats": self.repeats, "config": self.config, "test": self.test, "subsets": self.subsets,
                "summaries": self.summaries, "paired": self.paired, "cells": [c.to_dict() for c in self.cells],
                "timing": self.timing, "environment": self.environment}

    def save(self, path: str | Path) -> Path:
        from radpair.data.corpus import atomic_write_text

        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False, default=_json_default))
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransferResult":
        if d.get("format") != FORMAT:
            raise DataError(f"not a radpair transfer result (format {d.get('format')!r})")
        return cls(task=d["task"], class_names=d["class_names"], arms=d["arms"], budgets=d["budgets"],
                   repeats=int(d["repeats"]), config=d["config"], subsets=d.get("subsets", []),
                   cells=[CellResult.from_dict(c) for c in d.get("cells", [])], summaries=d.get("summaries", []),
                   paired=d.get("paired", []), test=d.get("test", {}), timing=d.get("timing", {}),
                   environment=d.get("environment", {}), primary_metric=d.get("primary_metric", "macro_auc"))

    @classmethod
    def load(cls, path: str | Path) -> "TransferResult":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such results file")
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)


def _flip(p: dict[str, Any]) -> dict[str, Any]:
    """The same comparison read as b − a (point values negate, interval ends swap)."""

    def neg(x: Any) -> Any:
        return None if x is None else -x

    out = dict(p)
    out["arm_a"], out["arm_b"] = p["arm_b"], p["arm_a"]
    out["mean_diff"] = neg(p.get("mean_diff"))
    out["ci_low"], out["ci_high"] = neg(p.get("ci_high")), neg(p.get("ci_low"))
    out["t_ci_low"], out["t_ci_high"] = neg(p.get("t_ci_high")), neg(p.get("t_ci_low"))
    out["per_repeat"] = [{**r, "a": r.get("b"), "b": r.get("a"), "diff": neg(r.get("diff")),
                          "ci_low": neg(r.get("ci_high")), "ci_high": neg(r.get("ci_low"))}
                         for r in p.get("per_repeat", [])]
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return _f(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


__all__ = ["CellResult", "SUMMARY_METRICS", "TransferResult", "summarise"]
