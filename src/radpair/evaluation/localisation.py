"""Localisation scores: does a saliency map point at the finding the generator drew?

A saliency map that looks plausible can still be wrong; on synthetic corpora the
generator knows where it drew every finding (:mod:`radpair.data.synth.masks`), so an
explanation can be scored against that ground truth instead of being eyeballed.

Two scores per image, both defined only where the finding's mask is non-empty:

* **pointing game** - is the map's peak inside the mask (optionally within ``tolerance``
  pixels of it)? When several pixels share the peak value the image scores the share of
  them inside the mask: the expected hit of a random tie-break, computed without
  randomness, so a flat map scores exactly the chance level.
* **mass share** - the share of the map's positive mass inside the mask (saliency
  clipped at 0 and normalised to sum 1; an all-zero map counts as uniform, so it also
  scores the chance level rather than 0 or NaN).

The **chance level** of an image is the mask's share of the image (the dilated mask's
with a tolerance): the pointing score of a peak placed uniformly at random, and the mass
share of a uniform map. Two baselines are provided as maps, :func:`centre_map` (a
Gaussian at the image centre: findings in the middle of the chest are "found" without
looking) and :func:`uniform_map`.

Maps of any resolution are upsampled bilinearly (half-pixel centres, as
``torch.nn.functional.interpolate(..., align_corners=False)``) to the mask's. Aggregates
are means over images with patient-bootstrap intervals from one shared
:class:`~radpair.evaluation.paired.BootstrapDraws`, so two methods scored on the same
images get a paired difference whose interval reflects the pairing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from radpair.errors import DataError
from radpair.evaluation.metrics import json_float
from radpair.evaluation.paired import BootstrapDraws, _percentile_ci, bootstrap_p_value

METRICS = ("pointing_game", "mass_share")
BASELINES = ("centre", "uniform")
_TIE_RTOL = 1e-7  # values this close to the peak (relative) tie with it: upsampling rounds


# ---- maps -----------------------------------------------------------------------------------------
def _as_stack(a: Any, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"{what} must be (N, H, W) or (H, W); got shape {arr.shape}")
    return arr


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights with half-pixel centres, edges clamped (align_corners=False)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def upsample(saliency: Any, shape: Sequence[int]) -> np.ndarray:
    """(N, h, w) maps -> (N, H, W) float64 by bilinear interpolation (a no-op at equal size)."""
    s = _as_stack(saliency, "saliency").astype(np.float64, copy=False)
    if not np.all(np.isfinite(s)):
        raise DataError("saliency maps contain NaN or infinite values; a map must be finite to be scored")
    h_out, w_out = int(shape[0]), int(shape[1])
    if s.shape[1:] == (h_out, w_out):
        return s
    ry, rx = _resize_matrix(s.shape[1], h_out), _resize_matrix(s.shape[2], w_out)
    return np.einsum("yh,nhw,xw->nyx", ry, s, rx, optimize=True)


def centre_map(n: int, shape: Sequence[int], sigma: float = 0.25) -> np.ndarray:
    """A Gaussian at the image centre (``sigma`` as a fraction of the side): "look at the middle"."""
    h, w = int(shape[0]), int(shape[1])
    y = (np.arange(h) + 0.5) / h - 0.5
    x = (np.arange(w) + 0.5) / w - 0.5
    g = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2.0 * sigma * sigma))
    return np.broadcast_to(g, (int(n), h, w)).copy()


def uniform_map(n: int, shape: Sequence[int]) -> np.ndarray:
    """A flat map: no information, so it scores the chance level on both scores."""
    return np.ones((int(n), int(shape[0]), int(shape[1])), dtype=np.float64)


# ---- per-image scores -----------------------------------------------------------------------------
def _masks(masks: Any) -> np.ndarray:
    m = _as_stack(masks, "masks")
    if m.dtype != bool:
        if not np.isin(np.unique(m), (0, 1)).all():
            raise DataError(f"masks must be boolean (or 0/1); got values of dtype {m.dtype}")
        m = m.astype(bool)
    return m


def _reach(masks: np.ndarray, tolerance: int) -> np.ndarray:
    """The masks grown by ``tolerance`` pixels (Euclidean): where a peak still counts as a hit."""
    if tolerance < 0:
        raise DataError(f"tolerance must be >= 0 pixels; got {tolerance}")
    if tolerance == 0:
        return masks
    out = np.empty_like(masks)
    for i, m in enumerate(masks):
        out[i] = ndimage.distance_transform_edt(~m) <= tolerance if m.any() else m
    return out


def chance_level(masks: Any, tolerance: int = 0) -> np.ndarray:
    """(N,) mask area / image area (of the mask grown by ``tolerance``); NaN for an empty mask.

    The pointing score of a randomly placed peak and the mass share of a uniform map.
    """
    m = _reach(_masks(masks), int(tolerance))
    area = m.reshape(len(m), -1).mean(axis=1)
    return np.where(m.reshape(len(m), -1).any(axis=1), area, np.nan)


def _pair(saliency: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    m = _masks(masks)
    s = upsample(saliency, m.shape[1:])
    if len(s) != len(m):
        raise DataError(f"{len(s)} saliency maps for {len(m)} masks; they must describe the same images")
    return s, m


def pointing_game(saliency: Any, masks: Any, tolerance: int = 0, ties: str = "share") -> np.ndarray:
    """(N,) per-image hit of the saliency peak in the mask: 1, 0, a tie share, or NaN (empty mask).

    ``ties="share"`` scores the share of tied peak pixels inside the mask; ``"first"`` takes
    the first tied pixel in row-major order (a single pixel, as most papers do).
    """
    if ties not in ("share", "first"):
        raise DataError(f"ties must be 'share' or 'first'; got {ties!r}")
    s, m = _pair(saliency, masks)
    return _pointing(s, m, _reach(m, int(tolerance)), ties)


def _pointing(s: np.ndarray, m: np.ndarray, reach: np.ndarray, ties: str) -> np.ndarray:
    n = len(s)
    flat = s.reshape(n, -1)
    inside = reach.reshape(n, -1)
    out = np.full(n, np.nan)
    for i in range(n):
        if not m[i].any():
            continue
        if ties == "first":
            out[i] = float(inside[i, int(np.argmax(flat[i]))])
            continue
        peak = flat[i].max()
        tied = flat[i] >= peak - _TIE_RTOL * max(abs(peak), np.finfo(np.float64).tiny)
        out[i] = float(inside[i, tied].mean())
    return out


def mass_share(saliency: Any, masks: Any) -> np.ndarray:
    """(N,) share of the positive saliency mass inside the mask; NaN for an empty mask.

    An all-zero (or all-negative) map carries no information and is scored as uniform.
    """
    s, m = _pair(saliency, masks)
    return _mass(s, m)


def _mass(s: np.ndarray, m: np.ndarray) -> np.ndarray:
    n = len(s)
    pos = np.clip(s, 0.0, None).reshape(n, -1)
    inside = m.reshape(n, -1)
    total = pos.sum(axis=1)
    share = np.where(total > 0, (pos * inside).sum(axis=1) / np.where(total > 0, total, 1.0), inside.mean(axis=1))
    return np.where(inside.any(axis=1), share, np.nan)


# ---- aggregates -----------------------------------------------------------------------------------
@dataclass
class LocalisationScore:
    """One method's mean score on one finding, with a bootstrap interval over patients."""

    method: str
    finding: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n_images: int
    replicates: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "finding": self.finding, "metric": self.metric,
                "value": json_float(self.value), "ci_low": json_float(self.ci_low),
                "ci_high": json_float(self.ci_high), "n_images": int(self.n_images)}


@dataclass
class LocalisationDifference:
    """method_a minus method_b on the same images and the same patient replicates."""

    method_a: str
    method_b: str
    finding: str
    metric: str
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_images: int

    def to_dict(self) -> dict[str, Any]:
        return {"method_a": self.method_a, "method_b": self.method_b, "finding": self.finding,
                "metric": self.metric, "diff": json_float(self.diff), "ci_low": json_float(self.ci_low),
                "ci_high": json_float(self.ci_high), "p_value": json_float(self.p_value),
                "n_images": int(self.n_images)}


def bootstrap_mean(values: np.ndarray, draws: BootstrapDraws, rows: np.ndarray | None = None,
                   confidence: float = 0.95) -> tuple[float, float, float, np.ndarray]:
    """Mean of ``values`` (images ``rows`` of the draws) with its percentile interval.

    Returns (mean, low, high, replicate means); a replicate that drew none of the images
    is NaN and left out of the interval.
    """
    values = np.asarray(values, dtype=np.float64)
    rows = np.arange(draws.n_images) if rows is None else np.asarray(rows)
    if values.shape != rows.shape:
        raise DataError(f"{values.size} values for {rows.size} rows of the bootstrap draws")
    if values.size == 0:
        return math.nan, math.nan, math.nan, np.full(draws.n_bootstrap, np.nan)
    w = draws.weights(rows).astype(np.float64)
    tot = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.where(tot > 0, (w @ values) / tot, np.nan)
    lo, hi = _percentile_ci(reps, confidence)
    return float(values.mean()), lo, hi, reps


def _difference(a: LocalisationScore, b: LocalisationScore, confidence: float) -> LocalisationDifference:
    d = a.replicates - b.replicates
    lo, hi = _percentile_ci(d, confidence)
    return LocalisationDifference(a.method, b.method, a.finding, a.metric, a.value - b.value, lo, hi,
                                  bootstrap_p_value(d), a.n_images)


@dataclass
class LocalisationResult:
    """Scores per method x finding x metric, the chance level per finding, and paired differences."""

    scores: list[LocalisationScore]
    differences: list[LocalisationDifference]
    chance: dict[str, float]
    n_images: dict[str, int]
    tolerance: int = 0
    confidence: float = 0.95
    n_bootstrap: int = 0
    seed: int | None = None
    unit: str = "patient"

    def score(self, method: str, finding: str, metric: str = "pointing_game") -> LocalisationScore:
        for s in self.scores:
            if (s.method, s.finding, s.metric) == (method, finding, metric):
                return s
        raise DataError(f"no {metric} score for method {method!r} on {finding!r}")

    def difference(self, method_a: str, method_b: str, finding: str,
                   metric: str = "pointing_game") -> LocalisationDifference:
        for d in self.differences:
            if (d.method_a, d.method_b, d.finding, d.metric) == (method_a, method_b, finding, metric):
                return d
        raise DataError(f"no {metric} difference {method_a!r} - {method_b!r} on {finding!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"scores": [s.to_dict() for s in self.scores],
                "differences": [d.to_dict() for d in self.differences],
                "chance": {k: json_float(v) for k, v in self.chance.items()},
                "n_images": dict(self.n_images), "tolerance": int(self.tolerance),
                "confidence": float(self.confidence), "n_bootstrap": int(self.n_bootstrap),
                "seed": self.seed, "unit": self.unit}

    def to_markdown(self) -> str:
        """One table per finding (methods x scores, chance level underneath) and the differences."""
        pct = int(round(self.confidence * 100))
        tol = f", tolerance {self.tolerance} px" if self.tolerance else ""
        lines = [f"Localisation against ground-truth regions ({pct}% {self.unit}-bootstrap CIs, "
                 f"{self.n_bootstrap} replicates{tol}).", ""]
        for finding in self.chance:
            lines += [f"**{finding}** ({self.n_images[finding]} images; chance level {_fmt(self.chance[finding])})", "",
                      "| method | pointing game | mass share |", "|---|---|---|"]
            methods = list(dict.fromkeys(s.method for s in self.scores if s.finding == finding))
            for m in methods:
                cells = [_cell(self.score(m, finding, metric)) for metric in METRICS]
                lines.append(f"| {m} | {cells[0]} | {cells[1]} |")
            lines.append("")
        if self.differences:
            lines += ["Paired differences (a - b, same images and replicates):", "",
                      "| finding | metric | a | b | a - b | p |", "|---|---|---|---|---|---|"]
            for d in self.differences:
                lines.append(f"| {d.finding} | {d.metric} | {d.method_a} | {d.method_b} | "
                             f"{_fmt(d.diff, signed=True)} [{_fmt(d.ci_low, signed=True)}, "
                             f"{_fmt(d.ci_high, signed=True)}] | {_fmt(d.p_value)} |")
            lines.append("")
        return "\n".join(lines)


def _fmt(x: float, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _cell(s: LocalisationScore) -> str:
    return f"{_fmt(s.value)} [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]"


def evaluate_localisation(
    saliency: Mapping[str, Mapping[str, Any]],
    masks: Mapping[str, Any],
    groups: Any = None,
    *,
    draws: BootstrapDraws | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    tolerance: int = 0,
    baselines: Sequence[str] = BASELINES,
    pairs: Sequence[tuple[str, str]] | None = None,
    confidence: float = 0.95,
    ties: str = "share",
) -> LocalisationResult:
    """Score saliency maps of several methods against the masks of several findings.

    ``saliency[method][finding]`` is (N, h, w) for the same N images as ``masks[finding]``
    (N, H, W); images whose mask is empty (the finding is absent) are not scored.
    ``groups`` holds a patient id per image for the bootstrap (None: images resample
    alone). One set of ``draws`` serves every method and finding, so ``pairs`` (default:
    every method minus every baseline, then every pair of methods) are paired comparisons.
    """
    if not 0.0 < confidence < 1.0:
        raise DataError(f"confidence must be in (0, 1); got {confidence}")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise DataError(f"unknown baselines {unknown} (valid: {list(BASELINES)})")
    if not masks:
        raise DataError("no masks given: nothing to score against")
    stacks = {f: _masks(m) for f, m in masks.items()}
    n = {len(m) for m in stacks.values()}
    if len(n) != 1:
        raise DataError(f"mask stacks describe different numbers of images: { {f: len(m) for f, m in stacks.items()} }")
    n_img = n.pop()
    clash = [b for b in baselines if b in saliency]
    if clash:
        raise DataError(f"methods {clash} have the names of baselines; rename them")
    if draws is None:
        draws = BootstrapDraws.draw(groups, n_bootstrap, seed, n_images=n_img)
    elif draws.n_images != n_img:
        raise DataError(f"the bootstrap draws cover {draws.n_images} images, the masks {n_img}")

    methods = list(saliency) + list(baselines)
    scores: list[LocalisationScore] = []
    chance: dict[str, float] = {}
    counts: dict[str, int] = {}
    for finding, m in stacks.items():
        rows = np.flatnonzero(m.reshape(n_img, -1).any(axis=1))
        counts[finding] = int(rows.size)
        chance[finding] = float(np.mean(chance_level(m[rows], tolerance))) if rows.size else math.nan
        for method in methods:
            maps = _method_maps(saliency, method, finding, n_img, m.shape[1:])
            if maps is None:
                continue
            per_image = _score_images(maps, m, rows, int(tolerance), ties)
            for metric in METRICS:
                value, lo, hi, reps = bootstrap_mean(per_image[metric], draws, rows, confidence)
                scores.append(LocalisationScore(method, finding, metric, value, lo, hi, int(rows.size), reps))

    if pairs is None:
        own = list(saliency)
        pairs = [(a, b) for a in own for b in baselines] + \
            [(a, b) for i, a in enumerate(own) for b in own[i + 1:]]
    by_key = {(s.method, s.finding, s.metric): s for s in scores}
    differences = []
    for a, b in pairs:
        for finding in stacks:
            for metric in METRICS:
                sa, sb = by_key.get((a, finding, metric)), by_key.get((b, finding, metric))
                if sa is not None and sb is not None:
                    differences.append(_difference(sa, sb, confidence))
    return LocalisationResult(scores, differences, chance, counts, int(tolerance), confidence, draws.n_bootstrap,
                              draws.seed, draws.unit.value)


def _score_images(maps: Any, masks: np.ndarray, rows: np.ndarray, tolerance: int, ties: str,
                  chunk: int = 64) -> dict[str, np.ndarray]:
    """Both scores of images ``rows``, upsampling a chunk at a time (memory stays flat in N)."""
    if ties not in ("share", "first"):
        raise DataError(f"ties must be 'share' or 'first'; got {ties!r}")
    out = {metric: np.empty(rows.size) for metric in METRICS}
    for a in range(0, rows.size, chunk):
        r = rows[a:a + chunk]
        s, m = _pair(maps(r) if callable(maps) else maps[r], masks[r])
        out["pointing_game"][a:a + r.size] = _pointing(s, m, _reach(m, tolerance), ties)
        out["mass_share"][a:a + r.size] = _mass(s, m)
    return out


def _method_maps(saliency: Mapping[str, Mapping[str, Any]], method: str, finding: str, n: int,
                 shape: tuple[int, int]) -> Any:
    """The maps of one method (an array, or for a baseline a function of the rows), or None."""
    if method == "centre":
        return lambda rows: centre_map(len(rows), shape)
    if method == "uniform":
        return lambda rows: uniform_map(len(rows), shape)
    maps = saliency[method].get(finding)
    if maps is None:
        return None
    maps = _as_stack(maps, f"saliency of {method!r} for {finding!r}")
    if len(maps) != n:
        raise DataError(f"saliency of {method!r} for {finding!r} has {len(maps)} maps for {n} images")
    return maps


__all__ = ["upsample", "centre_map", "uniform_map", "chance_level", "pointing_game", "mass_share", "bootstrap_mean",
           "evaluate_localisation", "LocalisationScore", "LocalisationDifference", "LocalisationResult", "METRICS",
           "BASELINES"]
