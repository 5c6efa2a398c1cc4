"""Task-level metrics of the transfer protocol: one call scores one arm on one test set.

Why one engine for four task kinds (binary, multilabel, multiclass, ordinal): the
comparisons the protocol makes (arms x label budgets x repeats, paired over shared
patient draws) only hold if every number is computed the same way, with the same
bootstrap weights, the same class set and the same discard rule. So every metric - point
value and each replicate - goes through the weighted kernels of
:mod:`~radpair.evaluation.scores`, driven by one :class:`~radpair.evaluation.paired.BootstrapDraws`.

Rules that make the numbers comparable:

* A class is *scored* when its usable test labels hold both values (for multi-class, one
  class vs the rest). Macro averages run over exactly the scored classes; the others are
  listed in ``skipped`` with a :class:`~radpair.evaluation.metrics.SkipReason`.
* A bootstrap replicate in which any scored class (or ordinal cut) loses all its
  positives or negatives cannot give the macro over the same class set. Averaging over
  the remaining classes would mix different quantities into one interval, so such a
  replicate is discarded for *every* metric of the result; ``n_bootstrap_valid`` says
  how many remain, and kept replicate arrays hold NaN there.
* Thresholded metrics of binary / multilabel tasks use thresholds chosen on validation
  data (:func:`choose_thresholds`), never on the test set. Multi-class decisions are argmax.

Label representation: binary / multilabel ``y`` (N, C) 0/1 with ``mask`` (N, C) and
``probs`` (N, C) positive-class probabilities (binary is multilabel with C = 1);
multiclass / ordinal ``y`` (N,) in [0, K) with ``mask`` (N,) and ``probs`` (N, K).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from radpair.errors import DataError, unknown_choice_message
from radpair.evaluation.metrics import ResamplingUnit, SkipReason, class_names_for, json_float
from radpair.evaluation.paired import BootstrapDraws
from radpair.evaluation.scores import (
    DEFAULT_MAX_CELLS,
    CalibrationBins,
    ConfusionCells,
    Ranked,
    ReliabilityCurve,
    _multiclass_from_matrices,
    chunks,
    rank,
    ranked_binary_metrics,
    reliability_curve,
    top_class,
)

KINDS = ("binary", "multilabel", "multiclass", "ordinal")
MULTILABEL_KINDS = ("binary", "multilabel")
PRIMARY_METRIC = {kind: "macro_auc" for kind in KINDS}
THRESHOLDED = ("f1", "precision", "recall", "accuracy")
# tolerance on multi-class probability rows summing to 1 (float32 softmax, rounding in files)
_ROW_SUM_TOL = 1e-3

FITTED = "validation_f1"


# ---- thresholds -------------------------------------------------------------------------------
@dataclass
class Thresholds:
    """Per-class decision thresholds and where each came from.

    ``source[c]`` is ``"validation_f1"`` when the threshold maximises F1 on validation
    labels, or ``"fallback_0.5: <why>"`` when the validation labels of that class cannot
    choose one (no positive or no negative): a reader of the results must be able to tell
    a tuned threshold from a default. Behaves as an array (``np.asarray(t)``).
    """

    values: np.ndarray
    source: list[str]

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64).ravel()
        if len(self.source) != self.values.size:
            raise DataError(f"{self.values.size} thresholds but {len(self.source)} sources")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def n_fallback(self) -> int:
        return sum(s != FITTED for s in self.source)

    def to_dict(self) -> dict[str, Any]:
        return {"values": [float(v) for v in self.values], "source": list(self.source)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Thresholds":
        return cls(np.array(d["values"], dtype=np.float64), list(d["source"]))


def _best_f1_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The threshold (decision ``s >= t``) with the highest F1 on (y, s).

    Candidates are one per distinct decision set: the low end of the probability range
    (everything positive), midpoints between consecutive distinct scores, and just above
    the high end (nothing positive). Midpoints rather than the scores themselves keep a
    margin on both sides for unseen test scores. Exactly tied F1 values pick the middle of
    the tied candidates, which does not favour either end of a flat optimum.
    """
    order = np.argsort(s, kind="mergesort")
    ss, ys = s[order], y[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    distinct = ss[starts]
    pos = np.add.reduceat(ys, starts)
    cnt = np.add.reduceat(np.ones_like(ys), starts)
    # candidate j (0..m) predicts blocks j..m-1 positive
    tp = np.r_[np.cumsum(pos[::-1])[::-1], 0.0]
    predicted = np.r_[np.cumsum(cnt[::-1])[::-1], 0.0]
    f1 = 2.0 * tp / (predicted + pos.sum())
    candidates = np.r_[
        min(0.0, float(distinct[0])),
        (distinct[:-1] + distinct[1:]) / 2.0,
        np.nextafter(max(1.0, float(distinct[-1])), np.inf),
    ]
    best = np.flatnonzero(f1 >= f1.max() * (1.0 - 1e-12))
    return float(candidates[best[(best.size - 1) // 2]])


def choose_thresholds(kind: str, y_val: Any, mask_val: Any, p_val: Any) -> Thresholds | None:
    """Per-class F1-optimal thresholds on validation data, for binary / multilabel tasks.

    Returns None for multiclass / ordinal, whose decisions are argmax. A class whose
    validation labels lack a positive or a negative gets 0.5 and a ``source`` saying why.
    """
    _check_kind(kind)
    if kind not in MULTILABEL_KINDS:
        return None
    y, mask, p = _prepare(kind, y_val, mask_val, p_val)
    values, source = [], []
    for c in range(y.shape[1]):
        m = mask[:, c]
        yc = y[m, c]
        if yc.size == 0:
            why = SkipReason.NO_LABELS
        elif yc.max() == 0:
            why = SkipReason.NO_POSITIVES
        elif yc.min() == 1:
            why = SkipReason.NO_NEGATIVES
        else:
            values.append(_best_f1_threshold(yc, p[m, c]))
            source.append(FITTED)
            continue
        values.append(0.5)
        source.append(f"fallback_0.5: validation has {why.value}")
    return Thresholds(np.array(values), source)


# ---- input handling ---------------------------------------------------------------------------
def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DataError(unknown_choice_message("task kind", kind, KINDS))


def _prepare(kind: str, y: Any, mask: Any, probs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and normalise to (int labels, bool mask, float probs); masked entries may be junk."""
    p = np.asarray(probs, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    if kind in MULTILABEL_KINDS:
        if yy.ndim == 1:
            yy = yy[:, None]
        if p.ndim == 1:
            p = p[:, None]
        m = np.ones(yy.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if m.ndim == 1:
            m = m[:, None]
        if not (yy.shape == m.shape == p.shape) or yy.ndim != 2:
            raise DataError(f"{kind}: y {yy.shape}, mask {m.shape} and probs {p.shape} must all be (N, C)")
        if kind == "binary" and yy.shape[1] != 1:
            raise DataError(f"binary tasks have one label column; got {yy.shape[1]} (use kind 'multilabel')")
        vals = yy[m]
        if vals.size and not np.isin(vals, (0.0, 1.0)).all():
            bad = sorted(set(vals[~np.isin(vals, (0.0, 1.0))][:10]))
            raise DataError(f"{kind}: usable labels must be 0 or 1; found {bad}")
        if not np.isfinite(p[m]).all():
            raise DataError(f"{kind}: probabilities contain NaN or inf where labels are usable")
        return np.where(m, yy, 0.0).astype(np.int8), m, p
    if yy.ndim != 1 or p.ndim != 2 or p.shape[0] != yy.shape[0]:
        raise DataError(f"{kind}: y must be (N,) and probs (N, K); got {yy.shape} and {p.shape}")
    m = np.ones(yy.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).ravel()
    if m.shape != yy.shape:
        raise DataError(f"{kind}: mask {m.shape} must match y {yy.shape}")
    k = p.shape[1]
    if k < 2:
        raise DataError(f"{kind}: needs at least 2 classes; probs have {k} columns")
    vals = yy[m]
    if vals.size and not (np.isin(vals, np.arange(k))).all():
        bad = sorted(set(vals[~np.isin(vals, np.arange(k))][:10]))
        raise DataError(f"{kind}: usable labels must be integers in [0, {k}); found {bad}")
    rows = p[m]
    if not np.isfinite(rows).all():
        raise DataError(f"{kind}: probabilities contain NaN or inf where labels are usable")
    sums = rows.sum(axis=1)
    if sums.size and np.abs(sums - 1.0).max() > _ROW_SUM_TOL:
        worst = sums[np.abs(sums - 1.0).argmax()]
        raise DataError(f"{kind}: probability rows must sum to 1 (worst row sums to {worst:.4g})")
    return np.where(m, yy, 0.0).astype(np.intp), m, p


def ordinal_cut_names(n_levels: int) -> list[str]:
    """``auc_0|123``-style names of the K-1 cuts (levels joined with "," when K > 10)."""
    sep = "" if n_levels <= 10 else ","
    return [
        f"auc_{sep.join(str(i) for i in range(k + 1))}|{sep.join(str(i) for i in range(k + 1, n_levels))}"
        for k in range(n_levels - 1)
    ]


def _skip_reason(y: np.ndarray) -> SkipReason | None:
    if y.size == 0:
        return SkipReason.NO_LABELS
    if y.max() == 0:
        return SkipReason.NO_POSITIVES
    if y.min() == 1:
        return SkipReason.NO_NEGATIVES
    return None


# ---- evaluation plans -------------------------------------------------------------------------
# gather(rows) -> (B, len(rows)) int64 weights of those local rows
Gather = Callable[[np.ndarray], np.ndarray]
Evaluated = tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], np.ndarray]


def _mean_over(per: dict[str, dict[str, np.ndarray]], metric: str, b: int) -> np.ndarray:
    cols = [m[metric] for m in per.values()]
    return np.mean(cols, axis=0) if cols else np.full(b, np.nan)


class _MultilabelPlan:
    """Everything that does not depend on the weights, prepared once per result."""

    def __init__(self, y: np.ndarray, mask: np.ndarray, p: np.ndarray, names: list[str],
                 thresholds: np.ndarray | None, n_bins: int) -> None:
        self.units: list[tuple[str, np.ndarray, Ranked, float | None]] = []
        self.skipped: dict[str, SkipReason] = {}
        self.reliability: dict[str, ReliabilityCurve] = {}
        self.thresholded = thresholds is not None
        self.n_bins = n_bins
        for c, name in enumerate(names):
            rows = np.flatnonzero(mask[:, c])
            why = _skip_reason(y[rows, c])
            if why is not None:
                self.skipped[name] = why
                continue
            r = rank(p[rows, c], y[rows, c])
            t = None if thresholds is None else float(thresholds[c])
            self.units.append((name, rows[r.order], r, t))
            self.reliability[name] = reliability_curve(r.scores, r.y, n_bins)

    @property
    def n_scored(self) -> int:
        return len(self.units)

    def evaluate(self, gather: Gather, b: int) -> Evaluated:
        per: dict[str, dict[str, np.ndarray]] = {}
        valid = np.ones(b, dtype=bool)
        for name, idx, r, t in self.units:
            m = ranked_binary_metrics(r, gather(idx), threshold=t, n_bins=self.n_bins, presorted=True)
            valid &= np.isfinite(m["auc"])
            per[name] = m
        metrics = ["auc", "ap", *(THRESHOLDED if self.thresholded else ()), "ece"]
        values = {f"macro_{k}": _mean_over(per, k, b) for k in metrics}
        return values, per, valid


class _MulticlassPlan:
    """Multiclass / ordinal: one set of usable rows shared by all classes, argmax decisions."""

    def __init__(self, y: np.ndarray, mask: np.ndarray, p: np.ndarray, names: list[str], ordinal: bool,
                 n_bins: int) -> None:
        self.rows = np.flatnonzero(mask)
        self.k = p.shape[1]
        self.ordinal = ordinal
        yk, pk = y[self.rows], p[self.rows]
        pred, conf = top_class(pk)
        correct = (pred == yk).astype(np.float64)
        self.cells = ConfusionCells(yk, pred, self.k)
        self.calibration = CalibrationBins(conf, correct, n_bins)
        self.skipped: dict[str, SkipReason] = {}
        self.classes: list[tuple[int, str, Ranked]] = []
        for c, name in enumerate(names):
            why = _skip_reason((yk == c).astype(np.int8))
            if why is not None:
                self.skipped[name] = why
            else:
                self.classes.append((c, name, rank(pk[:, c], yk == c)))
        # ordinal cuts; an unscorable one stays in the table as NaN so that every result of a
        # task has the same columns, and is listed in ``skipped``
        self.cuts: list[tuple[str, Ranked | None]] = []
        if ordinal:
            for c, cut in enumerate(ordinal_cut_names(self.k)):
                above = (yk > c).astype(np.int8)
                why = _skip_reason(above)
                if why is not None:
                    self.skipped[cut] = why
                    self.cuts.append((cut, None))
                else:
                    self.cuts.append((cut, rank(pk[:, c + 1 :].sum(axis=1), above)))
        self.reliability = {"top_class": reliability_curve(conf, correct, n_bins)} if self.rows.size else {}

    @property
    def n_scored(self) -> int:
        return len(self.classes) + sum(r is not None for _, r in self.cuts)

    def evaluate(self, gather: Gather, b: int) -> Evaluated:
        w = gather(self.rows)
        confusion = self.cells.matrices(w)
        decisions, accuracy = _multiclass_from_matrices(confusion)
        valid = confusion.sum(axis=(1, 2)) > 0
        per: dict[str, dict[str, np.ndarray]] = {}
        for c, name, r in self.classes:
            m = ranked_binary_metrics(r, w[:, r.order], presorted=True)
            valid &= np.isfinite(m["auc"])
            per[name] = {**m, **{k: v[:, c] for k, v in decisions.items()}}
        values = {
            "macro_auc": _mean_over(per, "auc", b),
            "macro_ap": _mean_over(per, "ap", b),
            "macro_f1": _mean_over(per, "f1", b),
            "accuracy": accuracy,
            "ece": self.calibration.ece(w),
        }
        if self.ordinal:
            cut_aucs = []
            for cut, r in self.cuts:
                if r is None:
                    values[cut] = np.full(b, np.nan)
                    continue
                auc = ranked_binary_metrics(r, w[:, r.order], presorted=True)["auc"]
                valid &= np.isfinite(auc)
                values[cut] = auc
                cut_aucs.append(auc)
            values["ovr_macro_auc"] = values["macro_auc"]
            values["macro_auc"] = np.mean(cut_aucs, axis=0) if cut_aucs else np.full(b, np.nan)
        return values, per, valid


# ---- result -----------------------------------------------------------------------------------
def _ci_pair(x: Any) -> tuple[float, float]:
    return (math.nan if x[0] is None else float(x[0]), math.nan if x[1] is None else float(x[1]))


def _f(x: Any) -> float:
    return math.nan if x is None else float(x)


@dataclass
class TaskMetrics:
    """One arm scored on one test set (or one subgroup of it).

    ``values`` holds the task-level metrics (macro averages, accuracy / ECE for
    multi-class, dichotomised AUCs for ordinal); ``per_class`` the metrics of each scored
    class. ``ci`` / ``per_class_ci`` are percentile intervals over the *valid* replicates
    (``n_bootstrap_valid`` of ``n_bootstrap``). ``replicates`` keeps the (B,) replicate
    arrays of ``values`` for paired comparisons; it lives only in memory, since B floats
    per metric per result would dominate the result files. ``draws_id`` fingerprints
    the bootstrap draws so comparisons can check that both arms saw the same patients.
    """

    kind: str
    class_names: list[str]
    values: dict[str, float]
    per_class: dict[str, dict[str, float]]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_class_ci: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    skipped: dict[str, SkipReason] = field(default_factory=dict)
    n: int = 0
    n_groups: int = 0
    n_positive: dict[str, int] = field(default_factory=dict)
    n_labelled: dict[str, int] = field(default_factory=dict)
    n_bootstrap: int = 0
    n_bootstrap_valid: int = 0
    confidence: float = 0.95
    resampling_unit: ResamplingUnit | None = None
    draws_seed: int | None = None
    draws_id: str | None = None
    thresholds: Thresholds | None = None
    reliability: dict[str, ReliabilityCurve] = field(default_factory=dict)
    n_bins: int = 10
    subgroups: dict[str, dict[str, "TaskMetrics"]] = field(default_factory=dict)
    subgroups_skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.kind]

    @property
    def primary(self) -> float:
        return self.values[self.primary_metric]

    @property
    def scored_classes(self) -> list[str]:
        return [c for c in self.class_names if c in self.per_class]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN -> null); ``replicates`` are left out on purpose."""

        def ci(pair: tuple[float, float]) -> list[float | None]:
            return [json_float(pair[0]), json_float(pair[1])]

        return {
            "kind": self.kind,
            "class_names": list(self.class_names),
            "primary_metric": self.primary_metric,
            "values": {k: json_float(v) for k, v in self.values.items()},
            "per_class": {c: {k: json_float(v) for k, v in m.items()} for c, m in self.per_class.items()},
            "ci": {k: ci(v) for k, v in self.ci.items()},
            "per_class_ci": {c: {k: ci(v) for k, v in m.items()} for c, m in self.per_class_ci.items()},
            "skipped": {k: v.value for k, v in self.skipped.items()},
            "n": int(self.n),
            "n_groups": int(self.n_groups),
            "n_positive": {k: int(v) for k, v in self.n_positive.items()},
            "n_labelled": {k: int(v) for k, v in self.n_labelled.items()},
            "n_bootstrap": int(self.n_bootstrap),
            "n_bootstrap_valid": int(self.n_bootstrap_valid),
            "confidence": float(self.confidence),
            "resampling_unit": None if self.resampling_unit is None else self.resampling_unit.value,
            "draws_seed": self.draws_seed,
            "draws_id": self.draws_id,
            "thresholds": None if self.thresholds is None else self.thresholds.to_dict(),
            "reliability": {k: v.to_dict() for k, v in self.reliability.items()},
            "n_bins": int(self.n_bins),
            "subgroups": {col: {v: s.to_dict() for v, s in vals.items()} for col, vals in self.subgroups.items()},
            "subgroups_skipped": {col: dict(vals) for col, vals in self.subgroups_skipped.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskMetrics":
        unit = d.get("resampling_unit")
        return cls(
            kind=d["kind"],
            class_names=list(d["class_names"]),
            values={k: _f(v) for k, v in d["values"].items()},
            per_class={c: {k: _f(v) for k, v in m.items()} for c, m in d["per_class"].items()},
            ci={k: _ci_pair(v) for k, v in d.get("ci", {}).items()},
            per_class_ci={c: {k: _ci_pair(v) for k, v in m.items()} for c, m in d.get("per_class_ci", {}).items()},
            skipped={k: SkipReason(v) for k, v in d.get("skipped", {}).items()},
            n=int(d.get("n", 0)),
            n_groups=int(d.get("n_groups", 0)),
            n_positive={k: int(v) for k, v in d.get("n_positive", {}).items()},
            n_labelled={k: int(v) for k, v in d.get("n_labelled", {}).items()},
            n_bootstrap=int(d.get("n_bootstrap", 0)),
            n_bootstrap_valid=int(d.get("n_bootstrap_valid", 0)),
            confidence=float(d.get("confidence", 0.95)),
            resampling_unit=None if unit is None else ResamplingUnit(unit),
            draws_seed=d.get("draws_seed"),
            draws_id=d.get("draws_id"),
            thresholds=None if d.get("thresholds") is None else Thresholds.from_dict(d["thresholds"]),
            reliability={k: ReliabilityCurve.from_dict(v) for k, v in d.get("reliability", {}).items()},
            n_bins=int(d.get("n_bins", 10)),
            subgroups={
                col: {v: cls.from_dict(s) for v, s in vals.items()} for col, vals in d.get("subgroups", {}).items()
            },
            subgroups_skipped={col: dict(vals) for col, vals in d.get("subgroups_skipped", {}).items()},
        )


# ---- scoring ----------------------------------------------------------------------------------
def _percentile(reps: np.ndarray, confidence: float) -> tuple[float, float]:
    v = reps[np.isfinite(reps)]
    if v.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _score(kind: str, y: np.ndarray, mask: np.ndarray, p: np.ndarray, names: list[str],
           thresholds: Thresholds | None, draws: BootstrapDraws | None, n_bins: int,
           confidence: float) -> tuple[TaskMetrics, int]:
    """Score already-validated arrays; returns the result and its number of scored classes."""
    if kind in MULTILABEL_KINDS:
        plan: _MultilabelPlan | _MulticlassPlan = _MultilabelPlan(
            y, mask, p, names, None if thresholds is None else thresholds.values, n_bins
        )
        usable = mask.any(axis=1)
        n_pos = {c: int(((y[:, i] == 1) & mask[:, i]).sum()) for i, c in enumerate(names)}
        n_lab = {c: int(mask[:, i].sum()) for i, c in enumerate(names)}
    else:
        plan = _MulticlassPlan(y, mask, p, names, kind == "ordinal", n_bins)
        usable = mask
        n_pos = {c: int(((y == i) & mask).sum()) for i, c in enumerate(names)}
        n_lab = {c: int(mask.sum()) for c in names}

    point_values, point_per, _ = plan.evaluate(lambda idx: np.ones((1, idx.size), dtype=np.int64), 1)
    values = {k: float(v[0]) for k, v in point_values.items()}
    per_class = {c: {k: float(v[0]) for k, v in m.items()} for c, m in point_per.items()}

    n_boot = 0 if draws is None else draws.n_bootstrap
    replicates: dict[str, np.ndarray] = {k: np.full(n_boot, np.nan) for k in values}
    per_reps = {c: {k: np.full(n_boot, np.nan) for k in m} for c, m in per_class.items()}
    valid = np.zeros(n_boot, dtype=bool)
    if draws is not None and n_boot:
        codes = draws.codes
        for b0, b1 in chunks(n_boot, max(codes.size, draws.n_groups), DEFAULT_MAX_CELLS):
            block = draws.counts[b0:b1].astype(np.int64)
            vals, per, ok = plan.evaluate(lambda idx: block[:, codes[idx]], b1 - b0)
            valid[b0:b1] = ok
            for k, v in vals.items():
                replicates[k][b0:b1] = v
            for c, m in per.items():
                for k, v in m.items():
                    per_reps[c][k][b0:b1] = v
        for arr in replicates.values():
            arr[~valid] = np.nan
        for m in per_reps.values():
            for arr in m.values():
                arr[~valid] = np.nan

    ci = {k: _percentile(v, confidence) for k, v in replicates.items()} if n_boot else {}
    per_class_ci = (
        {c: {k: _percentile(v, confidence) for k, v in m.items()} for c, m in per_reps.items()} if n_boot else {}
    )
    if draws is not None:
        n_groups = int(np.unique(draws.codes[usable]).size)
    else:
        n_groups = int(usable.sum())
    result = TaskMetrics(
        kind=kind,
        class_names=list(names),
        values=values,
        per_class=per_class,
        ci=ci,
        per_class_ci=per_class_ci,
        skipped=dict(plan.skipped),
        n=int(usable.sum()),
        n_groups=n_groups,
        n_positive=n_pos,
        n_labelled=n_lab,
        n_bootstrap=n_boot,
        n_bootstrap_valid=int(valid.sum()),
        confidence=confidence,
        resampling_unit=None if draws is None else draws.unit,
        draws_seed=None if draws is None else draws.seed,
        draws_id=None if draws is None else draws.fingerprint,
        thresholds=thresholds,
        reliability=plan.reliability,
        n_bins=n_bins,
        replicates=replicates,
    )
    return result, plan.n_scored


def _subgroup_keys(column: Any, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """String key per row and which rows have a value (None / NaN belong to no subgroup)."""
    col = np.asarray(column, dtype=object).ravel()
    if col.size != n:
        raise DataError(f"subgroup column {name!r} has {col.size} entries for {n} images")
    present = np.array([not (v is None or (isinstance(v, float) and math.isnan(v))) for v in col], dtype=bool)
    keys = np.array([str(v) for v in col], dtype=object)
    return keys, present


def score_task(
    kind: str,
    y: Any,
    mask: Any,
    probs: Any,
    class_names: Sequence[str] | None = None,
    *,
    thresholds: Thresholds | Any = None,
    draws: BootstrapDraws | None = None,
    subgroups: Mapping[str, Any] | None = None,
    n_bins: int = 10,
    confidence: float = 0.95,
) -> TaskMetrics:
    """Score predicted probabilities of one arm on one test set.

    Binary / multilabel: per class ``auc``, ``ap``, ``ece`` and, when ``thresholds`` are
    given (chosen on validation data), ``f1``, ``precision``, ``recall``, ``accuracy``;
    ``macro_*`` of each over the scored classes.

    Multiclass: per class one-vs-rest ``auc``, ``ap``, ``f1``, ``precision``, ``recall``
    (argmax decisions); ``macro_auc``, ``macro_ap``, ``macro_f1``, ``accuracy``, ``ece``
    (top-class confidence).

    Ordinal (K ordered levels, Chauhan et al. 2020): everything multiclass has, plus the
    K-1 dichotomised AUCs ``auc_0|123``, ``auc_01|23``, ... whose score for cut k is
    ``probs[:, k+1:].sum(1)`` against ``y > k``. For ordinal tasks ``macro_auc`` is the
    mean of the dichotomised AUCs (they respect the order; one-vs-rest AUCs of middle
    levels do not), and the one-vs-rest mean is kept as ``ovr_macro_auc``.

    ``draws`` (shared by every arm scored on this test set) gives percentile CIs and the
    replicate arrays for paired comparisons. ``subgroups`` maps a column name ("view",
    "sex", "age_band", ...) to one value per image; each value is scored like the whole
    set, on its rows and the matching columns of the same draws, or listed in
    ``subgroups_skipped`` when no class can be scored there.
    """
    _check_kind(kind)
    if not 0.0 < confidence < 1.0:
        raise DataError(f"confidence must be in (0, 1); got {confidence}")
    if n_bins < 1:
        raise DataError(f"n_bins must be >= 1; got {n_bins}")
    yy, m, p = _prepare(kind, y, mask, probs)
    names = class_names_for(p.shape[1], class_names)
    if kind in MULTILABEL_KINDS:
        if thresholds is not None and not isinstance(thresholds, Thresholds):
            thr = np.asarray(thresholds, dtype=np.float64).ravel()
            thresholds = Thresholds(thr, ["given"] * thr.size)
        if thresholds is not None and len(thresholds) != p.shape[1]:
            raise DataError(f"{len(thresholds)} thresholds for {p.shape[1]} classes")
    elif thresholds is not None:
        raise DataError(f"{kind} decisions are argmax; thresholds apply to binary / multilabel tasks only")
    n = p.shape[0]
    if draws is not None and draws.n_images != n:
        raise DataError(f"bootstrap draws cover {draws.n_images} images; the test set has {n}")

    result, _ = _score(kind, yy, m, p, names, thresholds, draws, n_bins, confidence)
    for col_name, column in (subgroups or {}).items():
        keys, present = _subgroup_keys(column, n, col_name)
        result.subgroups[col_name] = {}
        result.subgroups_skipped[col_name] = {}
        for value in sorted(set(keys[present])):
            rows = np.flatnonzero(present & (keys == value))
            sub, n_scored = _score(
                kind, yy[rows], m[rows], p[rows], names, thresholds,
                None if draws is None else draws.restrict(rows), n_bins, confidence,
            )
            if n_scored == 0:
                result.subgroups_skipped[col_name][value] = (
                    f"no class can be scored ({rows.size} images, {sub.n} with usable labels)"
                )
            else:
                result.subgroups[col_name][value] = sub
    return result
