"""Weighted metric kernels: every bootstrap replicate of a metric in one vectorised pass.

Why weights rather than resampled index arrays: a replicate that draws patient *j* twice
is the same sample as patient *j*'s images with weight 2, so a bootstrap of B replicates
is one (B, n) matrix of integer counts, and each metric below is computed for all rows
of that matrix at once. The point estimate is the same kernel with a single row of ones,
so point values and replicates can never disagree on a definition (ties, empty bins,
zero divisions).

Ranking metrics need the rows ordered by score; that order does not depend on the
weights, so it is computed once (:func:`rank`) and each replicate is a linear pass.

Conventions, shared by point estimates and replicates:

* ROC AUC, average precision and recall are NaN when the (weighted) sample has no
  positives (AUC also when it has no negatives): the metric does not exist, and callers
  decide what to do with such replicates rather than receiving a silent 0 or 0.5.
* Precision with no predicted positive is 0, and so is F1 when there are positives but no
  true positive: scikit-learn's default (``zero_division="warn"`` acts as 0). A classifier
  that never fires is bad, not undefined.
* Decisions are ``score >= threshold``.

Callers with large B chunk the weight matrix (:func:`chunks`) to bound memory; every
kernel is row-wise, so chunking never changes a value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from radpair.errors import DataError
from radpair.evaluation.metrics import _sorted_class_data, json_float

# (B x n) cells per chunk. Small on purpose: each kernel makes a handful of (B, n)
# temporaries, and at ~1 MB each they are reused from the allocator's free lists while
# staying in cache; 8 MB temporaries were measured ~3x slower (page faults on every one).
DEFAULT_MAX_CELLS = 1 << 17


def chunks(n_rows: int, n_cols: int, max_cells: int = DEFAULT_MAX_CELLS) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges of replicates such that a (stop - start, n_cols) block fits."""
    size = max(1, max_cells // max(1, n_cols))
    for b0 in range(0, n_rows, size):
        yield b0, min(n_rows, b0 + size)


def as_weights(w: Any, n: int) -> np.ndarray:
    """``None`` -> a single row of ones; (n,) -> (1, n); integer weights stay int64.

    Integer weights keep ranking sums exact (and prefix sums fast); anything else is float64.
    """
    if w is None:
        return np.ones((1, n), dtype=np.int64)
    arr = np.asarray(w)
    arr = arr.astype(np.int64 if arr.dtype.kind in "biu" else np.float64, copy=False)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n:
        raise DataError(f"weights must be (B, {n}); got shape {arr.shape}")
    return arr


def _safe_div(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    ok = den > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, num / np.where(ok, den, 1.0), empty)


class Segments:
    """Rows grouped by an integer key, so per-key weighted sums of every replicate are one
    gather and one ``reduceat`` over a few segments.

    Used for calibration bins and multi-class confusion cells. (A (B, n) x (n, k) matrix
    product does the same, but BLAS threads on a shared, busy machine were measured to
    stall it by orders of magnitude; this path is single-threaded and predictable.)
    """

    def __init__(self, keys: Any) -> None:
        k = np.asarray(keys, dtype=np.intp).ravel()
        self.order = np.argsort(k, kind="mergesort")
        sk = k[self.order]
        self.starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]]) if sk.size else np.zeros(0, dtype=np.intp)
        self.keys = sk[self.starts]

    @property
    def n(self) -> int:
        return int(self.order.size)

    def sums(self, w: np.ndarray, values: np.ndarray | None = None, *, presorted: bool = False) -> np.ndarray:
        """(B, n_keys) sums of ``w`` (times ``values``, given in the caller's row order)."""
        ws = w if presorted else w[:, self.order]
        if values is not None:
            ws = ws * np.asarray(values)[self.order]
        if self.starts.size == 0:
            return np.zeros((w.shape[0], 0), dtype=ws.dtype)
        return np.add.reduceat(ws, self.starts, axis=1)


# ---- ranking metrics -------------------------------------------------------------------------
@dataclass(frozen=True)
class Ranked:
    """Rows of one binary problem ordered by ascending score, tied scores as blocks."""

    order: np.ndarray  # positions in the caller's arrays, ascending score
    starts: np.ndarray  # first sorted position of each block of tied scores
    y: np.ndarray  # 0/1 labels in sorted order, float64
    scores: np.ndarray  # scores in sorted order

    @property
    def n(self) -> int:
        return int(self.order.size)


def rank(scores: Any, y: Any) -> Ranked:
    """Sort once per class (a stable sort, as :func:`metrics._sorted_class_data`)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    yy = np.asarray(y).ravel()
    if s.shape != yy.shape:
        raise DataError(f"scores {s.shape} and labels {yy.shape} differ in length")
    order, starts, ys = _sorted_class_data(s, yy)
    return Ranked(order=order, starts=starts, y=ys, scores=s[order])


def ranked_binary_metrics(
    r: Ranked,
    w: Any = None,
    *,
    threshold: float | None = None,
    n_bins: int | None = None,
    presorted: bool = False,
) -> dict[str, np.ndarray]:
    """Every metric of one binary problem from one pass over the score-sorted rows.

    Returns ``auc`` and ``ap``; with ``threshold`` also ``precision``, ``recall``, ``f1``,
    ``accuracy`` of ``score >= threshold``; with ``n_bins`` also ``ece`` of the scores as
    positive-class probabilities. Each is (B,). ``w`` is in the caller's row order unless
    ``presorted`` (already ``w[:, r.order]``, which saves a gather when the caller builds
    weights directly in sorted order).

    AUC is the Mann-Whitney statistic with ties counting one half (the formula of
    :func:`metrics.weighted_auc`). AP is scikit-learn's step-wise
    ``sum_k (R_k - R_{k-1}) P_k`` over one threshold per distinct score (a block of tied
    scores is one threshold); with ``pos_k`` the weighted positives of block k that is
    ``sum_k pos_k * P_k / total_pos``. Zero-weight blocks add nothing, as in scikit-learn,
    which drops zero-weight samples. Because the rows are sorted, a threshold's decisions
    are a suffix of them and the calibration bins are contiguous runs, so the confusion
    counts and per-bin sums come from the same prefix sums.
    """
    ws = as_weights(w, r.n)
    if not presorted and r.n:
        ws = ws[:, r.order]
    b = ws.shape[0]
    out: dict[str, np.ndarray] = {}
    if r.n == 0:
        nan = np.full(b, np.nan)
        out = {"auc": nan, "ap": nan.copy()}
        if threshold is not None:
            out.update(precision=np.zeros(b), recall=nan.copy(), f1=nan.copy(), accuracy=nan.copy())
        if n_bins is not None:
            out["ece"] = nan.copy()
        return out
    y = r.y.astype(ws.dtype)
    wy = ws * y
    # prefix sums over rows (integer cumsum is ~10x faster than float; bootstrap counts
    # stay int64 and sums stay exact), read at the last row of each tied block
    cpos_rows = np.cumsum(wy, axis=1)
    ctot_rows = np.cumsum(ws, axis=1)
    n_pos = cpos_rows[:, -1].copy()
    n_tot = ctot_rows[:, -1].copy()
    if threshold is not None:
        # rows from j on are predicted positive; j is the start of a block of tied scores
        j = int(np.searchsorted(r.scores, threshold, side="left"))
        tp = n_pos - (cpos_rows[:, j - 1] if j else 0)
        predicted = n_tot - (ctot_rows[:, j - 1] if j else 0)
        fp = predicted - tp
        fn = n_pos - tp
        out.update(_binary_from_counts(tp, fp, fn, n_tot))
    if r.starts.size == r.n:  # no ties: every row is its own block
        pos, tot, cpos, ctot = wy, ws, cpos_rows, ctot_rows
    else:
        ends = np.r_[r.starts[1:] - 1, r.n - 1]
        cpos, ctot = cpos_rows[:, ends], ctot_rows[:, ends]
        pos, tot = cpos.copy(), ctot.copy()
        pos[:, 1:] -= cpos[:, :-1]
        tot[:, 1:] -= ctot[:, :-1]
    # AUC: each positive of block k beats the negatives below it, ties count one half:
    # 2 * (neg_below_k + neg_k / 2) = 2 * (ctot_k - cpos_k) - (tot_k - pos_k), exact in integers
    twice_below = 2 * (ctot - cpos) - (tot - pos)
    out["auc"] = _safe_div(np.einsum("ij,ij->i", pos, twice_below) / 2.0, n_pos * (n_tot - n_pos), np.nan)
    # AP: precision at the threshold of block k (scores >= block k) is
    # (n_pos - cpos_k + pos_k) / (n_tot - ctot_k + tot_k)
    tp_k = (n_pos[:, None] - cpos + pos).astype(np.float64)
    predicted_k = (n_tot[:, None] - ctot + tot).astype(np.float64)
    precision_k = np.divide(tp_k, predicted_k, out=np.zeros_like(tp_k), where=predicted_k > 0)
    out["ap"] = _safe_div(np.einsum("ij,ij->i", pos.astype(np.float64), precision_k), n_pos, np.nan)
    if n_bins is not None:
        # bins are non-decreasing in the sorted scores: contiguous runs of rows
        bins = calibration_bins(r.scores, n_bins)
        bin_starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        gaps = np.add.reduceat(ws * (r.scores - r.y), bin_starts, axis=1)
        out["ece"] = _safe_div(np.abs(gaps).sum(axis=1), n_tot, np.nan)
    return out


def ranking_metrics(r: Ranked, w: Any = None, *, presorted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(ROC AUC, average precision), each (B,); see :func:`ranked_binary_metrics`."""
    m = ranked_binary_metrics(r, w, presorted=presorted)
    return m["auc"], m["ap"]


def roc_auc(scores: Any, y: Any, w: Any = None) -> np.ndarray:
    """(B,) weighted ROC AUC; NaN where a replicate lacks positives or negatives."""
    return ranking_metrics(rank(scores, y), w)[0]


def average_precision(scores: Any, y: Any, w: Any = None) -> np.ndarray:
    """(B,) weighted average precision (scikit-learn's definition); NaN without positives."""
    return ranking_metrics(rank(scores, y), w)[1]


# ---- thresholded decisions --------------------------------------------------------------------
def _binary_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, total: np.ndarray) -> dict[str, np.ndarray]:
    n_pos = tp + fn
    return {
        "precision": _safe_div(tp, tp + fp, 0.0),
        "recall": _safe_div(tp, n_pos, np.nan),
        "f1": np.where(n_pos > 0, _safe_div(2 * tp, 2 * tp + fp + fn, 0.0), np.nan),
        "accuracy": _safe_div(total - fp - fn, total, np.nan),
    }


def decision_counts(y: Any, decision: Any, w: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted (TP, FP, FN, TN), each (B,), of 0/1 decisions against 0/1 labels."""
    yy = np.asarray(y).ravel().astype(np.int64)
    d = np.asarray(decision).ravel().astype(np.int64)
    ws = as_weights(w, yy.size)
    tp = np.einsum("ij,j->i", ws, yy * d)
    predicted = np.einsum("ij,j->i", ws, d)
    n_pos = np.einsum("ij,j->i", ws, yy)
    total = ws.sum(axis=1)
    return tp, predicted - tp, n_pos - tp, total - predicted - n_pos + tp


def binary_decision_metrics(y: Any, decision: Any, w: Any = None) -> dict[str, np.ndarray]:
    """``precision``, ``recall``, ``f1``, ``accuracy``, each (B,), of thresholded decisions."""
    tp, fp, fn, tn = decision_counts(y, decision, w)
    return _binary_from_counts(tp, fp, fn, tp + fp + fn + tn)


def top_class(probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(argmax class, its probability) per row; ties go to the lowest class index."""
    p = np.asarray(probs, dtype=np.float64)
    pred = np.argmax(p, axis=1)
    return pred, p[np.arange(p.shape[0]), pred]


class ConfusionCells:
    """Weighted K x K confusion matrices (true x predicted) of every replicate at once."""

    def __init__(self, y: Any, pred: Any, n_classes: int) -> None:
        self.k = int(n_classes)
        yy = np.asarray(y, dtype=np.intp).ravel()
        pp = np.asarray(pred, dtype=np.intp).ravel()
        self.segments = Segments(yy * self.k + pp)

    def matrices(self, w: np.ndarray) -> np.ndarray:
        """(B, K, K) with [b, true, predicted] weights; ``w`` in the caller's row order."""
        out = np.zeros((w.shape[0], self.k * self.k), dtype=w.dtype)
        out[:, self.segments.keys] = self.segments.sums(w)
        return out.reshape(w.shape[0], self.k, self.k)


def _multiclass_from_matrices(m: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    tp = np.diagonal(m, axis1=1, axis2=2)
    support = m.sum(axis=2)
    predicted = m.sum(axis=1)
    per_class = {
        "precision": _safe_div(tp, predicted, 0.0),
        "recall": _safe_div(tp, support, np.nan),
        "f1": np.where(support > 0, _safe_div(2 * tp, support + predicted, 0.0), np.nan),
    }
    return per_class, _safe_div(tp.sum(axis=1), support.sum(axis=1), np.nan)


def multiclass_decision_metrics(
    y: Any, pred: Any, n_classes: int, w: Any = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One-vs-rest ``precision``/``recall``/``f1`` (each (B, K)) and accuracy (B,) of argmax decisions."""
    yy = np.asarray(y, dtype=np.intp).ravel()
    cells = ConfusionCells(yy, pred, n_classes)
    return _multiclass_from_matrices(cells.matrices(as_weights(w, yy.size)))


def macro_f1(y: Any, pred: Any, n_classes: int, w: Any = None, classes: Any = None) -> np.ndarray:
    """(B,) mean one-vs-rest F1 over ``classes`` (default: every class present in ``y``).

    The class set is fixed by the caller, not re-derived per replicate: a macro over a
    class set that changes between replicates is not one quantity.
    """
    yy = np.asarray(y, dtype=np.intp).ravel()
    cls = np.unique(yy) if classes is None else np.asarray(classes, dtype=np.intp)
    per_class, _ = multiclass_decision_metrics(yy, pred, n_classes, w)
    if cls.size == 0:
        return np.full(per_class["f1"].shape[0], np.nan)
    return per_class["f1"][:, cls].mean(axis=1)


# ---- calibration ------------------------------------------------------------------------------
def calibration_bins(confidence: Any, n_bins: int = 10) -> np.ndarray:
    """Equal-width bin of each confidence in [0, 1]: bin k is [k/n, (k+1)/n), 1.0 in the last."""
    if n_bins < 1:
        raise DataError(f"n_bins must be >= 1; got {n_bins}")
    c = np.asarray(confidence, dtype=np.float64).ravel()
    return np.clip(np.floor(c * n_bins), 0, n_bins - 1).astype(np.intp)


class CalibrationBins:
    """ECE of fixed (confidence, outcome) pairs under many weight vectors.

    ECE = sum over bins |sum_{i in bin} w_i (c_i - o_i)| / sum_i w_i: the bin-weighted gap
    between mean confidence and observed rate, so one segmented sum per replicate block.
    """

    def __init__(self, confidence: Any, outcome: Any, n_bins: int = 10) -> None:
        c = np.asarray(confidence, dtype=np.float64).ravel()
        o = np.asarray(outcome, dtype=np.float64).ravel()
        self.segments = Segments(calibration_bins(c, n_bins))
        self.gap_sorted = (c - o)[self.segments.order]

    def ece(self, w: np.ndarray) -> np.ndarray:
        ws = w[:, self.segments.order]
        gaps = self.segments.sums(ws * self.gap_sorted, presorted=True)
        return _safe_div(np.abs(gaps).sum(axis=1), ws.sum(axis=1), np.nan)


def expected_calibration_error(confidence: Any, outcome: Any, w: Any = None, n_bins: int = 10) -> np.ndarray:
    """(B,) ECE with equal-width bins.

    Binary: confidence = positive-class probability, outcome = label. Multi-class:
    confidence = top-class probability, outcome = (argmax == label).
    """
    bins = CalibrationBins(confidence, outcome, n_bins)
    return bins.ece(as_weights(w, bins.segments.n))


@dataclass
class ReliabilityCurve:
    """Per equal-width bin: mean confidence, observed rate, and the weight (images) in it.

    Empty bins hold NaN means and a zero count, so every curve has the same bins and
    curves of different arms can be drawn on one axis.
    """

    edges: np.ndarray  # (n_bins + 1,)
    mean_predicted: np.ndarray  # (n_bins,)
    observed: np.ndarray  # (n_bins,)
    count: np.ndarray  # (n_bins,)

    @property
    def n_bins(self) -> int:
        return int(self.count.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": [float(e) for e in self.edges],
            "mean_predicted": [json_float(float(v)) for v in self.mean_predicted],
            "observed": [json_float(float(v)) for v in self.observed],
            "count": [float(v) for v in self.count],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReliabilityCurve":
        def arr(xs: list) -> np.ndarray:
            return np.array([math.nan if x is None else float(x) for x in xs])

        return cls(arr(d["edges"]), arr(d["mean_predicted"]), arr(d["observed"]), arr(d["count"]))


def reliability_curve(confidence: Any, outcome: Any, n_bins: int = 10, weights: Any = None) -> ReliabilityCurve:
    """The point-estimate reliability diagram behind :func:`expected_calibration_error`."""
    c = np.asarray(confidence, dtype=np.float64).ravel()
    o = np.asarray(outcome, dtype=np.float64).ravel()
    w = np.ones(c.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    bins = calibration_bins(c, n_bins)
    count = np.bincount(bins, weights=w, minlength=n_bins)
    mean_pred = _safe_div(np.bincount(bins, weights=w * c, minlength=n_bins), count, np.nan)
    observed = _safe_div(np.bincount(bins, weights=w * o, minlength=n_bins), count, np.nan)
    return ReliabilityCurve(np.linspace(0.0, 1.0, n_bins + 1), mean_pred, observed, count)
