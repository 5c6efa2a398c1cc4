"""Shared bootstrap draws and paired differences between arms scored on one test set.

Why a shared draw object: two encoders evaluated on the same test images are correlated
(the same hard patients hurt both). Comparing their separate confidence intervals throws
that away and calls real differences "overlapping". If replicate *b* resamples the *same*
patients for every arm, the per-replicate difference ``a_b - b_b`` is a bootstrap sample
of the difference itself, whose interval is much tighter and honest about the pairing.
So the patient draws are made once per test set (:class:`BootstrapDraws`) and handed to
every :func:`~radpair.evaluation.taskmetrics.score_task` call on it.

Two sources of variation remain in a few-label study: which test patients (the shared
bootstrap) and which few training labels were drawn (the repeats). :func:`paired_difference`
reports each repeat alone, then pools them with a two-level bootstrap that resamples
repeats as well as patients, and a t-interval over repeats as a second, cruder view.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from scipy import stats

from radpair.errors import DataError
from radpair.evaluation.metrics import ResamplingUnit, _group_codes, json_float

if TYPE_CHECKING:  # pragma: no cover
    from radpair.evaluation.taskmetrics import TaskMetrics

# same chunking rule as metrics._bootstrap_aucs, so that for one seed the draws are the
# patients that evaluate_classification's bootstrap uses: old and new tables agree
_MAX_CELLS = 4_000_000
# separates the repeat-resampling stream of the two-level bootstrap from the patient draws
_REPEAT_STREAM = 0x5EED_0F_0E


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class BootstrapDraws:
    """Patient-level resampling as integer counts: ``counts[b, g]`` copies of group g in replicate b.

    ``codes[i]`` is the group (patient) of image i, so an image's weight in replicate b is
    ``counts[b, codes[i]]``: a drawn patient brings all of their images. The arrays are
    made read-only; ``fingerprint`` identifies the draws so that a comparison can refuse
    results scored with different patients per replicate.
    """

    counts: np.ndarray  # (B, n_groups) int32
    codes: np.ndarray  # (n,) int
    seed: int | None = None
    unit: ResamplingUnit = ResamplingUnit.PATIENT
    counts_digest: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts, dtype=np.int32)
        codes = np.asarray(self.codes, dtype=np.intp).ravel()
        if counts.ndim != 2:
            raise DataError(f"counts must be (B, n_groups); got shape {counts.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= counts.shape[1]):
            raise DataError(f"codes must index the {counts.shape[1]} groups of counts")
        counts.setflags(write=False)
        codes.setflags(write=False)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "unit", ResamplingUnit(self.unit))
        if not self.counts_digest:
            object.__setattr__(self, "counts_digest", _digest(counts))

    @classmethod
    def draw(cls, groups: Any, n_bootstrap: int, seed: int, *, n_images: int | None = None) -> "BootstrapDraws":
        """Draw ``n_bootstrap`` replicates of the groups (patients) with replacement.

        ``groups`` holds one patient id per image; ``None`` makes every image its own unit
        (``n_images`` then says how many) and records :attr:`ResamplingUnit.IMAGE`, since
        such intervals ignore within-patient correlation. Uses its own generator from
        ``seed``; global random state is never touched.
        """
        if n_bootstrap < 0:
            raise DataError(f"n_bootstrap must be >= 0; got {n_bootstrap}")
        if groups is None:
            if n_images is None:
                raise DataError("without groups, n_images must say how many images there are")
            n = int(n_images)
        else:
            n = int(np.asarray(groups).shape[0])
            if n_images is not None and n_images != n:
                raise DataError(f"{n} group ids given for {n_images} images")
        codes, n_groups, unit = _group_codes(groups, n)
        rng = np.random.default_rng(seed)
        counts = np.zeros((n_bootstrap, n_groups), dtype=np.int32)
        if n_groups:
            chunk = max(1, _MAX_CELLS // max(1, n, n_groups))
            for b0 in range(0, n_bootstrap, chunk):
                b1 = min(n_bootstrap, b0 + chunk)
                picks = rng.integers(0, n_groups, size=(b1 - b0, n_groups))
                flat = (picks + (np.arange(b1 - b0) * n_groups)[:, None]).ravel()
                counts[b0:b1] = np.bincount(flat, minlength=(b1 - b0) * n_groups).reshape(b1 - b0, n_groups)
        return cls(counts=counts, codes=codes, seed=int(seed), unit=unit)

    @property
    def n_bootstrap(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_images(self) -> int:
        return int(self.codes.size)

    @property
    def n_groups(self) -> int:
        return int(self.counts.shape[1])

    @property
    def fingerprint(self) -> str:
        """Same value iff replicate b weights every image identically in both draws."""
        return _digest(np.frombuffer(self.counts_digest.encode(), dtype=np.uint8), self.codes.astype(np.int64))

    def weights(self, rows: Any = None, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(stop - start, len(rows)) int32 per-image weights of replicates ``start:stop``."""
        codes = self.codes if rows is None else self.codes[np.asarray(rows)]
        return self.counts[start:stop][:, codes]

    def restrict(self, rows: Any) -> "BootstrapDraws":
        """The same replicates seen from a subset of images (a subgroup): counts are shared."""
        return BootstrapDraws(
            counts=self.counts,
            codes=self.codes[np.asarray(rows)],
            seed=self.seed,
            unit=self.unit,
            counts_digest=self.counts_digest,
        )


# ---- paired differences -----------------------------------------------------------------------
def bootstrap_p_value(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p of "difference = 0": 2 x the smaller tail share, floored at 1/(B+1).

    Identical arms (every replicate difference exactly 0) get 1.0: there is no evidence
    of any difference, and the floor must not turn that into a small p.
    """
    d = diffs[np.isfinite(diffs)]
    if d.size == 0:
        return math.nan
    if np.all(d == 0):
        return 1.0
    p = 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))
    return float(min(1.0, max(p, 1.0 / (d.size + 1))))


_p_value = bootstrap_p_value  # the earlier private name


def _percentile_ci(values: np.ndarray, confidence: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass
class RepeatDifference:
    """a - b on one repeat (one shared training subset), over the shared patient replicates."""

    repeat: int
    a: float
    b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_valid: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "repeat": int(self.repeat),
            "a": json_float(self.a),
            "b": json_float(self.b),
            "diff": json_float(self.diff),
            "ci_low": json_float(self.ci_low),
            "ci_high": json_float(self.ci_high),
            "p_value": json_float(self.p_value),
            "n_valid": int(self.n_valid),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RepeatDifference":
        f = _float_or_nan
        return cls(
            int(d["repeat"]), f(d["a"]), f(d["b"]), f(d["diff"]), f(d["ci_low"]), f(d["ci_high"]), f(d["p_value"]),
            int(d["n_valid"]),
        )


def _float_or_nan(x: Any) -> float:
    return math.nan if x is None else float(x)


@dataclass
class PairedDifference:
    """Arm a minus arm b on one metric: per repeat, and pooled over repeats.

    ``ci_low``/``ci_high``/``p_value`` come from the two-level bootstrap (repeats and test
    patients both resampled), so they cover both "which few labels" and "which test
    patients". ``t_ci_low``/``t_ci_high`` is a t-interval over the per-repeat point
    differences: it only sees label-subset variation (NaN with a single repeat).
    """

    metric: str
    arm_a: str | None
    arm_b: str | None
    per_repeat: list[RepeatDifference]
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_valid: int
    t_ci_low: float
    t_ci_high: float
    n_repeats: int
    n_bootstrap: int
    confidence: float = 0.95
    seed: int | None = None

    @property
    def significant(self) -> bool:
        """The pooled bootstrap interval excludes 0."""
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "arm_a": self.arm_a,
            "arm_b": self.arm_b,
            "per_repeat": [r.to_dict() for r in self.per_repeat],
            "mean_diff": json_float(self.mean_diff),
            "ci_low": json_float(self.ci_low),
            "ci_high": json_float(self.ci_high),
            "p_value": json_float(self.p_value),
            "n_valid": int(self.n_valid),
            "t_ci_low": json_float(self.t_ci_low),
            "t_ci_high": json_float(self.t_ci_high),
            "n_repeats": int(self.n_repeats),
            "n_bootstrap": int(self.n_bootstrap),
            "confidence": float(self.confidence),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PairedDifference":
        f = _float_or_nan
        return cls(
            metric=d["metric"],
            arm_a=d.get("arm_a"),
            arm_b=d.get("arm_b"),
            per_repeat=[RepeatDifference.from_dict(r) for r in d["per_repeat"]],
            mean_diff=f(d["mean_diff"]),
            ci_low=f(d["ci_low"]),
            ci_high=f(d["ci_high"]),
            p_value=f(d["p_value"]),
            n_valid=int(d["n_valid"]),
            t_ci_low=f(d["t_ci_low"]),
            t_ci_high=f(d["t_ci_high"]),
            n_repeats=int(d["n_repeats"]),
            n_bootstrap=int(d["n_bootstrap"]),
            confidence=float(d.get("confidence", 0.95)),
            seed=d.get("seed"),
        )


def _replicates(m: "TaskMetrics", metric: str, which: str, r: int) -> np.ndarray:
    if metric not in m.values:
        raise DataError(f"arm {which}, repeat {r}: no metric {metric!r} (has: {sorted(m.values)})")
    rep = m.replicates.get(metric)
    if rep is None or rep.size == 0:
        raise DataError(
            f"arm {which}, repeat {r}: no bootstrap replicates of {metric!r}; paired comparisons need results "
            "scored in this process with draws (replicates are not serialised)"
        )
    return np.asarray(rep, dtype=np.float64)


def paired_difference(
    a: Sequence["TaskMetrics"],
    b: Sequence["TaskMetrics"],
    metric: str = "macro_auc",
    confidence: float = 0.95,
    *,
    arm_a: str | None = None,
    arm_b: str | None = None,
) -> PairedDifference:
    """a minus b, where ``a[r]`` and ``b[r]`` were trained on the same subset r and scored
    on the same test set with the same :class:`BootstrapDraws`.

    A replicate discarded in either arm (NaN) is discarded for the pair; for the pooled
    bootstrap, a replicate is used only if it is valid in every repeat, so that each
    pooled replicate averages over the same kind of draw. Repeat resampling uses its own
    generator seeded from the draws' seed, so the table is reproducible and independent of
    the order in which pairs are computed.
    """
    if not 0.0 < confidence < 1.0:
        raise DataError(f"confidence must be in (0, 1); got {confidence}")
    if len(a) != len(b):
        raise DataError(f"arms have {len(a)} and {len(b)} repeats; a paired comparison needs the same repeats")
    if not a:
        raise DataError("no repeats to compare")
    per_repeat: list[RepeatDifference] = []
    diffs = []
    n_boot = None
    for r, (ma, mb) in enumerate(zip(a, b)):
        if ma.draws_id is None or mb.draws_id is None:
            raise DataError(
                f"repeat {r}: an arm was scored without bootstrap draws; pass the shared draws to score_task"
            )
        if ma.draws_id != mb.draws_id:
            raise DataError(
                f"repeat {r}: the arms were not scored with the same bootstrap draws "
                f"({ma.draws_id} vs {mb.draws_id}); replicate b must resample the same patients in both"
            )
        ra, rb = _replicates(ma, metric, "a", r), _replicates(mb, metric, "b", r)
        if n_boot is None:
            n_boot = ra.size
        if ra.size != n_boot or rb.size != n_boot:
            raise DataError(f"repeat {r}: {ra.size} and {rb.size} replicates; expected {n_boot}")
        d = ra - rb  # NaN where either arm discarded the replicate
        lo, hi = _percentile_ci(d, confidence)
        point = float(ma.values[metric]) - float(mb.values[metric])
        per_repeat.append(
            RepeatDifference(r, float(ma.values[metric]), float(mb.values[metric]), point, lo, hi, bootstrap_p_value(d),
                             int(np.isfinite(d).sum()))
        )
        diffs.append(d)

    d_all = np.stack(diffs)  # (R, B)
    n_rep = d_all.shape[0]
    points = np.array([p.diff for p in per_repeat])
    mean_diff = float(points.mean())

    seed = a[0].draws_seed
    rng = np.random.default_rng([int(seed) if seed is not None else 0, _REPEAT_STREAM])
    pick = rng.integers(0, n_rep, size=(n_boot, n_rep))
    pooled = d_all[pick, np.arange(n_boot)[:, None]].mean(axis=1)
    pooled[~np.isfinite(d_all).all(axis=0)] = np.nan
    lo, hi = _percentile_ci(pooled, confidence)

    t_lo = t_hi = math.nan
    if n_rep >= 2 and np.isfinite(points).all():
        sd = float(points.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2.0, n_rep - 1)) * sd / math.sqrt(n_rep) if sd > 0 else 0.0
        t_lo, t_hi = mean_diff - half, mean_diff + half
    return PairedDifference(
        metric=metric,
        arm_a=arm_a,
        arm_b=arm_b,
        per_repeat=per_repeat,
        mean_diff=mean_diff,
        ci_low=lo,
        ci_high=hi,
        p_value=bootstrap_p_value(pooled),
        n_valid=int(np.isfinite(pooled).sum()),
        t_ci_low=t_lo,
        t_ci_high=t_hi,
        n_repeats=n_rep,
        n_bootstrap=int(n_boot),
        confidence=confidence,
        seed=seed,
    )


def paired_table(
    results: dict[str, Sequence["TaskMetrics"]], metric: str = "macro_auc", confidence: float = 0.95
) -> list[PairedDifference]:
    """Every unordered pair of arms, in insertion order: ``a - b`` for a listed before b."""
    names = list(results)
    return [
        paired_difference(results[x], results[y], metric, confidence, arm_a=x, arm_b=y)
        for i, x in enumerate(names)
        for y in names[i + 1 :]
    ]
