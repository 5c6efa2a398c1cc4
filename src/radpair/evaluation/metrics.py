"""Classification metrics for multi-label chest-radiograph findings.

Why this module exists rather than a bare ``roc_auc_score`` call:

* Real label sets are incomplete. CheXpert-style columns hold 1 / 0 / -1 (uncertain) /
  blank (not mentioned); a class's AUC must be computed only on the images that carry a
  usable label for *that* class, and how -1 and blank are treated is a study choice, so it
  is an explicit :class:`LabelPolicy` instead of an implicit ``fillna``.
* A macro AUC silently averaged over classes that happen to have no positives in the test
  set is meaningless; classes without both label values are skipped and the result says
  which and why.
* Several images come from one patient and are correlated. Resampling images would make
  confidence intervals too narrow, so the bootstrap resamples *patients* (each drawn
  patient brings all of their images). Resampling with replacement is implemented as
  integer weights per patient, which gives exactly the AUC of the duplicated sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from radpair.errors import DataError

UNCERTAIN_VALUE = -1


class UncertainPolicy(str, Enum):
    """What a -1 (uncertain) label means; names follow the CheXpert paper (U-Ignore etc.)."""

    IGNORE = "ignore"  # masked out for that class
    ZEROS = "zeros"  # counted as negative
    ONES = "ones"  # counted as positive


class BlankPolicy(str, Enum):
    """What a missing (NaN / empty) label means."""

    IGNORE = "ignore"  # masked out for that class: the label is unknown
    NEGATIVE = "negative"  # "not mentioned" read as absent (common for report-derived labels)


@dataclass(frozen=True)
class LabelPolicy:
    """How raw 1 / 0 / -1 / NaN labels become binary labels plus a per-class mask.

    The default masks both -1 and NaN: nothing is invented, each class is scored on the
    images that carry a definite label for it.
    """

    uncertain: UncertainPolicy = UncertainPolicy.IGNORE
    blank: BlankPolicy = BlankPolicy.IGNORE

    @classmethod
    def parse(cls, uncertain: str = "ignore", blank: str = "ignore") -> "LabelPolicy":
        """Build from strings (config / CLI values) with a clear error for a typo."""
        try:
            return cls(UncertainPolicy(uncertain), BlankPolicy(blank))
        except ValueError:
            raise DataError(
                f"label policy: uncertain={uncertain!r} (valid: {[p.value for p in UncertainPolicy]}), "
                f"blank={blank!r} (valid: {[p.value for p in BlankPolicy]})"
            ) from None


@dataclass(frozen=True)
class MaskedLabels:
    """Binary labels (N, C) as 0/1 int8 and a boolean mask of which entries are usable."""

    values: np.ndarray
    mask: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.values.shape[1])

    def positives(self) -> np.ndarray:
        """Per-class count of usable positives."""
        return ((self.values == 1) & self.mask).sum(axis=0)

    def negatives(self) -> np.ndarray:
        return ((self.values == 0) & self.mask).sum(axis=0)

    def take(self, rows: np.ndarray) -> "MaskedLabels":
        return MaskedLabels(self.values[rows], self.mask[rows])


def as_label_matrix(labels: Any) -> np.ndarray:
    """Any (N,) / (N, C) array-like (incl. a DataFrame with empty cells) -> float (N, C)."""
    arr = np.asarray(labels, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"labels must be (N,) or (N, C); got shape {arr.shape}")
    return arr


def apply_label_policy(labels: Any, policy: LabelPolicy = LabelPolicy()) -> MaskedLabels:
    """Turn raw labels (1 / 0 / -1 / NaN) into :class:`MaskedLabels` under ``policy``.

    Any other value is a data error (e.g. a 2 from a mis-encoded column), named here rather
    than silently treated as positive by a downstream ``> 0``.
    """
    if isinstance(labels, MaskedLabels):
        return labels
    arr = as_label_matrix(labels)
    blank = np.isnan(arr)
    uncertain = arr == UNCERTAIN_VALUE
    known = (arr == 0) | (arr == 1)
    bad = ~(blank | uncertain | known)
    if bad.any():
        vals = sorted({float(v) for v in arr[bad][:20]})
        raise DataError(f"labels may only be 1, 0, -1 or empty; found {vals}")
    values = np.where(known, arr, 0.0)
    mask = known.copy()
    if policy.uncertain is UncertainPolicy.ZEROS:
        mask |= uncertain
    elif policy.uncertain is UncertainPolicy.ONES:
        values = np.where(uncertain, 1.0, values)
        mask |= uncertain
    if policy.blank is BlankPolicy.NEGATIVE:
        mask |= blank
    return MaskedLabels(values.astype(np.int8), mask)


class SkipReason(str, Enum):
    """Why a class has no AUC in a result."""

    NO_LABELS = "no usable labels"
    NO_POSITIVES = "no positive examples"
    NO_NEGATIVES = "no negative examples"


class ResamplingUnit(str, Enum):
    PATIENT = "patient"
    IMAGE = "image"  # no patient ids given: CIs ignore within-patient correlation


@dataclass(frozen=True)
class ConfidenceInterval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low


def json_float(x: float | None) -> float | None:
    """NaN is not valid JSON; write it as null."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


@dataclass
class ClassificationMetrics:
    """Per-class and macro ROC AUC with patient-bootstrap confidence intervals.

    ``macro`` averages the classes in ``per_class`` (those with both label values);
    ``skipped`` names the others. ``n`` counts images with at least one usable label.
    """

    per_class: dict[str, float]
    macro: float
    ci_low: float
    ci_high: float
    n: int
    n_groups: int
    skipped: dict[str, SkipReason] = field(default_factory=dict)
    per_class_ci: dict[str, ConfidenceInterval] = field(default_factory=dict)
    n_positive: dict[str, int] = field(default_factory=dict)
    n_labelled: dict[str, int] = field(default_factory=dict)
    confidence: float = 0.95
    n_bootstrap: int = 0
    resampling_unit: ResamplingUnit = ResamplingUnit.PATIENT

    @property
    def ci(self) -> ConfidenceInterval:
        return ConfidenceInterval(self.ci_low, self.ci_high)

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_class": {k: json_float(v) for k, v in self.per_class.items()},
            "macro": json_float(self.macro),
            "ci_low": json_float(self.ci_low),
            "ci_high": json_float(self.ci_high),
            "n": int(self.n),
            "n_groups": int(self.n_groups),
            "skipped": {k: v.value for k, v in self.skipped.items()},
            "per_class_ci": {k: [json_float(c.low), json_float(c.high)] for k, c in self.per_class_ci.items()},
            "n_positive": {k: int(v) for k, v in self.n_positive.items()},
            "n_labelled": {k: int(v) for k, v in self.n_labelled.items()},
            "confidence": self.confidence,
            "n_bootstrap": self.n_bootstrap,
            "resampling_unit": self.resampling_unit.value,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassificationMetrics":
        nan = float("nan")

        def f(x: Any) -> float:
            return nan if x is None else float(x)

        return cls(
            per_class={k: f(v) for k, v in d["per_class"].items()},
            macro=f(d["macro"]),
            ci_low=f(d["ci_low"]),
            ci_high=f(d["ci_high"]),
            n=int(d["n"]),
            n_groups=int(d["n_groups"]),
            skipped={k: SkipReason(v) for k, v in d.get("skipped", {}).items()},
            per_class_ci={k: ConfidenceInterval(f(v[0]), f(v[1])) for k, v in d.get("per_class_ci", {}).items()},
            n_positive={k: int(v) for k, v in d.get("n_positive", {}).items()},
            n_labelled={k: int(v) for k, v in d.get("n_labelled", {}).items()},
            confidence=float(d.get("confidence", 0.95)),
            n_bootstrap=int(d.get("n_bootstrap", 0)),
            resampling_unit=ResamplingUnit(d.get("resampling_unit", "patient")),
        )


def class_names_for(n_classes: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [f"class_{i}" for i in range(n_classes)]
    names = [str(c) for c in class_names]
    if len(names) != n_classes:
        raise DataError(f"{len(names)} class names given for {n_classes} label columns")
    if len(set(names)) != len(names):
        raise DataError(f"class names are not unique: {names}")
    return names


def _sorted_class_data(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order rows by score and mark the start of each block of tied scores.

    The order does not depend on bootstrap weights, so it is computed once per class and
    every replicate is a linear pass (see :func:`weighted_auc`).
    """
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts, y[order].astype(np.float64)


def weighted_auc(y_sorted: np.ndarray, starts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for rows already sorted by score, for one or many weight vectors.

    ``weights`` is (n,) or (B, n); integer weights give the AUC of the sample with each
    row repeated that many times, ties counting one half (the Mann-Whitney statistic, as
    scikit-learn computes it). Returns NaN where a replicate lacks positives or negatives.
    """
    w = np.atleast_2d(weights).astype(np.float64)
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - y_sorted), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return auc


def fast_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Unweighted ROC AUC without scikit-learn's input validation overhead.

    Same value as ``roc_auc_score`` (ties count one half); used inside loops such as the
    probe's C search, where thousands of calls on small arrays are dominated by checks.
    """
    order, starts, ys = _sorted_class_data(np.asarray(scores, dtype=np.float64), np.asarray(y))
    return float(weighted_auc(ys, starts, np.ones(ys.size))[0])


def _group_codes(groups: Any, n: int) -> tuple[np.ndarray, int, ResamplingUnit]:
    if groups is None:
        return np.arange(n), n, ResamplingUnit.IMAGE
    g = np.asarray(groups)
    if g.shape != (n,):
        raise DataError(f"groups must have one entry per image ({n}); got shape {g.shape}")
    _, codes = np.unique(g.astype(str) if g.dtype == object else g, return_inverse=True)
    return codes.ravel(), int(codes.max()) + 1 if n else 0, ResamplingUnit.PATIENT


def evaluate_classification(
    labels: Any,
    probs: Any,
    groups: Any = None,
    class_names: Sequence[str] | None = None,
    policy: LabelPolicy = LabelPolicy(),
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ClassificationMetrics:
    """Per-class and macro AUC of ``probs`` (N, C) against raw or masked ``labels``.

    ``groups`` holds one patient id per image; the bootstrap resamples patients. Without
    it every image is its own unit and the result says so (``resampling_unit``).
    ``n_bootstrap=0`` skips the CIs (NaN bounds). The bootstrap uses its own generator
    from ``seed``; global random state is never touched.
    """
    y = apply_label_policy(labels, policy)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.shape != y.values.shape:
        raise DataError(f"probabilities have shape {p.shape}, labels {y.values.shape}")
    if not np.isfinite(p[y.mask]).all():
        raise DataError("probabilities contain NaN or inf where labels are present")
    if not 0.0 < confidence < 1.0:
        raise DataError(f"confidence must be in (0, 1); got {confidence}")
    names = class_names_for(y.n_classes, class_names)
    n_images = p.shape[0]
    codes, n_groups, unit = _group_codes(groups, n_images)

    per_class: dict[str, float] = {}
    skipped: dict[str, SkipReason] = {}
    n_pos = dict(zip(names, (int(v) for v in y.positives())))
    n_lab = dict(zip(names, (int(v) for v in y.mask.sum(axis=0))))
    scored: list[int] = []
    for c, name in enumerate(names):
        m = y.mask[:, c]
        yc = y.values[m, c]
        if m.sum() == 0:
            skipped[name] = SkipReason.NO_LABELS
        elif yc.min() == 1:
            skipped[name] = SkipReason.NO_NEGATIVES
        elif yc.max() == 0:
            skipped[name] = SkipReason.NO_POSITIVES
        else:
            per_class[name] = float(roc_auc_score(yc, p[m, c]))
            scored.append(c)
    macro = float(np.mean(list(per_class.values()))) if per_class else float("nan")

    lo = hi = float("nan")
    per_class_ci: dict[str, ConfidenceInterval] = {}
    if n_bootstrap > 0 and scored:
        boot = _bootstrap_aucs(y, p, codes, n_groups, scored, n_bootstrap, seed)  # (B, len(scored))
        alpha = (1.0 - confidence) / 2.0
        valid_rows = ~np.isnan(boot).all(axis=1)
        if valid_rows.any():
            boot_macro = np.nanmean(boot[valid_rows], axis=1)
            lo, hi = (float(v) for v in np.quantile(boot_macro, [alpha, 1.0 - alpha]))
        for j, c in enumerate(scored):
            col = boot[:, j][~np.isnan(boot[:, j])]
            if col.size:
                a, b = np.quantile(col, [alpha, 1.0 - alpha])
                per_class_ci[names[c]] = ConfidenceInterval(float(a), float(b))
    return ClassificationMetrics(
        per_class=per_class,
        macro=macro,
        ci_low=lo,
        ci_high=hi,
        n=int(y.mask.any(axis=1).sum()),
        n_groups=int(np.unique(codes[y.mask.any(axis=1)]).size),
        skipped=skipped,
        per_class_ci=per_class_ci,
        n_positive=n_pos,
        n_labelled=n_lab,
        confidence=confidence,
        n_bootstrap=int(n_bootstrap),
        resampling_unit=unit,
    )


def _bootstrap_aucs(
    y: MaskedLabels,
    p: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    classes: list[int],
    n_bootstrap: int,
    seed: int,
    max_cells: int = 4_000_000,
) -> np.ndarray:
    """(B, len(classes)) AUCs; replicate b draws ``n_groups`` patients with replacement.

    A replicate in which a class lost all its positives (or negatives) gives NaN for that
    class; the macro of that replicate averages the remaining classes.
    """
    rng = np.random.default_rng(seed)
    out = np.full((n_bootstrap, len(classes)), np.nan)
    prepared = []
    for c in classes:
        rows = np.flatnonzero(y.mask[:, c])
        order, starts, ys = _sorted_class_data(p[rows, c], y.values[rows, c])
        prepared.append((codes[rows][order], starts, ys))
    # chunk size depends only on the data size, so results do not depend on the class set
    chunk = max(1, max_cells // max(1, codes.size, n_groups))
    for b0 in range(0, n_bootstrap, chunk):
        b1 = min(n_bootstrap, b0 + chunk)
        draws = rng.integers(0, n_groups, size=(b1 - b0, n_groups))
        flat = (draws + (np.arange(b1 - b0) * n_groups)[:, None]).ravel()
        counts = np.bincount(flat, minlength=(b1 - b0) * n_groups).reshape(b1 - b0, n_groups)
        for j, (row_groups, starts, ys) in enumerate(prepared):
            out[b0:b1, j] = weighted_auc(ys, starts, counts[:, row_groups])
    return out
