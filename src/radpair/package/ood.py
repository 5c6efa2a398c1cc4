"""How far an image's pooled features lie from the training images' features.

An image from another scanner, another body part, or a photo of a screen still gets
confident probabilities. The package stores the mean and a shrunk (Ledoit-Wolf) precision
of the training features, and the 99th percentile of training Mahalanobis distances,
computed out of fold (each half scored under the statistics of the other half): an
in-sample percentile of a distance fitted on the same images is too small whenever the
feature dimension is not tiny next to the image count, and would flag normal images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radpair.errors import DataError

PERCENTILE = 99.0


@dataclass
class FeatureStats:
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D)
    threshold: float
    n: int
    percentile: float = PERCENTILE

    def distance(self, features: np.ndarray) -> np.ndarray:
        d = np.asarray(features, dtype=np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, self.precision, d), 0.0))

    def save(self, path: Path) -> Path:
        from safetensors.numpy import save_file

        save_file({"mean": self.mean.astype(np.float64), "precision": self.precision.astype(np.float64)}, str(path),
                  metadata={"threshold": repr(float(self.threshold)), "n": str(self.n),
                            "percentile": repr(float(self.percentile)), "distance": "mahalanobis (Ledoit-Wolf)"})
        return path

    @classmethod
    def load(cls, path: Path) -> "FeatureStats":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as fh:
                meta = fh.metadata() or {}
                return cls(fh.get_tensor("mean"), fh.get_tensor("precision"), float(meta["threshold"]),
                           int(meta["n"]), float(meta.get("percentile", PERCENTILE)))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types
            raise DataError(f"{path}: not readable feature statistics ({type(exc).__name__}: {exc})") from None


def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(x)
    return lw.location_, lw.precision_


def fit_feature_stats(features: np.ndarray, seed: int = 0) -> FeatureStats:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 4:
        raise DataError(f"feature statistics need at least 4 training images, got {x.shape[0] if x.ndim else 0}")
    order = np.random.default_rng(seed).permutation(len(x))
    halves = [order[: len(x) // 2], order[len(x) // 2:]]
    out_of_fold = []
    for a, b in (halves, halves[::-1]):
        mean, prec = _fit(x[a])
        d = x[b] - mean
        out_of_fold.append(np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, prec, d), 0.0)))
    mean, prec = _fit(x)
    return FeatureStats(mean, prec, float(np.percentile(np.concatenate(out_of_fold), PERCENTILE)), len(x))
