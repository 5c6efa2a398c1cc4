"""Temperature scaling fitted on validation outputs, with the reliability it buys.

One scalar T divides the logits; it never changes a ranking (AUC) or an argmax, only how
far probabilities can be read as frequencies. It is fitted on the validation draw the
transfer protocol chose the model on, never on test, and the package records the ECE
before and after so a reader can see whether it helped. Binary thresholds are mapped
through the same monotone transform, so the thresholded labels do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from radpair.package.model import to_probability_logits


@dataclass
class TemperatureFit:
    temperature: float
    ece_before: float | None
    ece_after: float | None
    nll_before: float
    nll_after: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        r = lambda x: None if x is None or not np.isfinite(x) else round(float(x), 6)  # noqa: E731
        return {"temperature": r(self.temperature), "fitted_on": "validate", "n_validation": self.n,
                "ece_before": r(self.ece_before), "ece_after": r(self.ece_after),
                "nll_before": r(self.nll_before), "nll_after": r(self.nll_after), "ece_bins": 10}


def _probs(z: np.ndarray, t: float, categorical: bool) -> np.ndarray:
    if categorical:
        s = z / t
        s = s - s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-z / t))


def _nll(z: np.ndarray, y: np.ndarray, mask: np.ndarray, t: float, categorical: bool) -> float:
    p = np.clip(_probs(z, t, categorical), 1e-12, 1 - 1e-12)
    if categorical:
        m = mask.astype(bool)
        return float(-np.log(p[m, y[m].astype(int)]).mean()) if m.any() else float("nan")
    m = mask.astype(bool)
    ll = y * np.log(p) + (1 - y) * np.log1p(-p)
    return float(-ll[m].mean()) if m.any() else float("nan")


def ece(p: np.ndarray, y: np.ndarray, mask: np.ndarray, categorical: bool) -> float | None:
    """Binary: every usable (image, class) entry; categorical: top-label confidence."""
    from radpair.evaluation.scores import expected_calibration_error

    m = mask.astype(bool)
    if not m.any():
        return None
    if categorical:
        conf, outcome = p[m].max(axis=1), (p[m].argmax(axis=1) == y[m]).astype(float)
    else:
        conf, outcome = p[m], y[m].astype(float)
    return float(np.asarray(expected_calibration_error(conf, outcome)).ravel()[0])


def fit_temperature(val_probs: np.ndarray, y: np.ndarray, mask: np.ndarray, categorical: bool) -> TemperatureFit:
    """T minimising validation NLL over usable labels (a bounded 1-D search on log T)."""
    from scipy.optimize import minimize_scalar

    z = to_probability_logits(val_probs, categorical)
    y = np.asarray(y)
    mask = np.asarray(mask).astype(bool)
    res = minimize_scalar(lambda lt: _nll(z, y, mask, float(np.exp(lt)), categorical), bounds=(-3.0, 3.0),
                          method="bounded", options={"xatol": 1e-4})
    t = float(np.exp(res.x))
    before, after = _nll(z, y, mask, 1.0, categorical), _nll(z, y, mask, t, categorical)
    if not after < before:  # no gain: keep the model as it is
        t, after = 1.0, before
    n = int(mask.any(axis=1).sum()) if mask.ndim == 2 else int(mask.sum())
    return TemperatureFit(t, ece(_probs(z, 1.0, categorical), y, mask, categorical),
                          ece(_probs(z, t, categorical), y, mask, categorical), before, after, n)


def map_thresholds(thresholds: list[float], temperature: float) -> list[float]:
    """Binary thresholds in the calibrated scale: ``sigmoid(logit(t) / T)``."""
    t = np.clip(np.asarray(thresholds, dtype=np.float64), 1e-7, 1 - 1e-7)
    z = np.log(t) - np.log1p(-t)
    return [float(v) for v in 1.0 / (1.0 + np.exp(-z / temperature))]
