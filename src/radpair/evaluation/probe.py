"""Linear probe: one L2 logistic regression per finding on frozen features.

Design choices and why:

* Features are standardised with statistics of the labelled subset only; the test set's
  statistics would leak information the few-label setting does not have.
* One binary model per class (not a multinomial model) because findings co-occur and
  each class has its own missing-label mask.
* The L2 strength ``C`` is chosen by cross-validation only when there is enough data for
  the choice to be better than a guess (``min_samples_for_cv`` labelled images and at
  least ``min_per_fold`` positives *and* negatives in every validation fold). The folds
  are grouped by patient, so images of one patient never sit on both sides of a fold.
  Otherwise a fixed, fairly strong default is used: with ten images, a weak penalty just
  memorises them.
* A class whose labelled rows all share one value cannot be fitted; it predicts that
  prior (a constant, so AUC 0.5 on test) and is flagged in :attr:`LinearProbe.fits`
  rather than raising, so one rare finding does not abort a whole label-efficiency sweep.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from radpair.errors import DataError
from radpair.evaluation.metrics import class_names_for, fast_auc


class FitStatus(str, Enum):
    FITTED = "fitted"
    CONSTANT = "constant"  # one label value only: predicts it (the prior)
    NO_LABELS = "no_labels"  # no usable label: predicts 0.5


class CSelection(str, Enum):
    GROUPED_CV = "grouped_cv"
    DEFAULT = "default"  # too little data for a meaningful CV
    NOT_APPLICABLE = "not_applicable"  # class was not fitted


@dataclass(frozen=True)
class ProbeConfig:
    """Probe hyper-parameters; defaults are meant for standardised encoder features."""

    default_c: float = 0.1
    c_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    cv_folds: int = 5
    min_samples_for_cv: int = 50
    min_per_fold: int = 2
    max_iter: int = 1000
    balanced: bool = False  # class_weight="balanced"; AUC is rank-based, so off by default
    seed: int = 0

    def __post_init__(self) -> None:
        if self.default_c <= 0 or any(c <= 0 for c in self.c_grid) or not self.c_grid:
            raise DataError(f"probe C values must be positive; got default {self.default_c}, grid {self.c_grid}")
        if self.cv_folds < 2:
            raise DataError(f"probe cv_folds must be >= 2; got {self.cv_folds}")


@dataclass(frozen=True)
class ClassFit:
    """How one class's model was obtained; ``prior`` is the positive rate it saw."""

    name: str
    status: FitStatus
    c: float | None
    c_selection: CSelection
    n_labelled: int
    n_positive: int
    prior: float
    cv_auc: float | None = None
    converged: bool = True
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "c": self.c,
            "c_selection": self.c_selection.value,
            "n_labelled": self.n_labelled,
            "n_positive": self.n_positive,
            "prior": self.prior,
            "cv_auc": self.cv_auc,
            "converged": self.converged,
            "note": self.note,
        }


def grouped_stratified_folds(
    y: np.ndarray, groups: np.ndarray, n_folds: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) row indices; every patient's rows land in one fold.

    Patients are visited in random order, those with more positives first, and each goes
    to the fold that currently holds the fewest positives (then the fewest rows). This
    spreads positives evenly like ``StratifiedGroupKFold`` at a fraction of its cost,
    which matters because the C search runs for every class of every subset.
    """
    _, codes = np.unique(groups, return_inverse=True)
    codes = codes.ravel()
    n_groups = int(codes.max()) + 1
    g_pos = np.bincount(codes, weights=y.astype(float), minlength=n_groups)
    g_size = np.bincount(codes, minlength=n_groups)
    perm = rng.permutation(n_groups)
    visit = perm[np.argsort(-g_pos[perm], kind="stable")]
    fold_pos = np.zeros(n_folds)
    fold_size = np.zeros(n_folds)
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    for g in visit:
        k = int(np.lexsort((fold_size, fold_pos))[0]) if g_pos[g] > 0 else int(np.argmin(fold_size))
        fold_of_group[g] = k
        fold_pos[k] += g_pos[g]
        fold_size[k] += g_size[g]
    fold = fold_of_group[codes]
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_folds)]


def _mask_from_labels(Y: np.ndarray) -> np.ndarray:
    """Without an explicit mask, only 0 and 1 count; -1 and NaN are missing."""
    return (Y == 0) | (Y == 1)


@dataclass
class LinearProbe:
    """Standardise + per-class logistic regression. ``fit(X, Y, mask, groups)`` then
    ``predict_proba(X)``; deterministic for a given config and data."""

    config: ProbeConfig = field(default_factory=ProbeConfig)
    class_names: Sequence[str] | None = None
    fits: list[ClassFit] = field(default_factory=list, init=False)
    _scaler: StandardScaler | None = field(default=None, init=False, repr=False)
    _models: list[LogisticRegression | None] = field(default_factory=list, init=False, repr=False)

    def fit(self, X: Any, Y: Any, mask: Any = None, groups: Any = None) -> "LinearProbe":
        """``X`` (N, D) features, ``Y`` (N, C) labels, ``mask`` (N, C) usable entries
        (default: entries equal to 0 or 1), ``groups`` (N,) patient ids for grouped CV
        (default: each image its own group)."""
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise DataError(f"probe.fit: X {X.shape} and Y {Y.shape} must be (N, D) and (N, C)")
        if X.shape[0] == 0:
            raise DataError("probe.fit: no training rows")
        if not np.isfinite(X).all():
            raise DataError("probe.fit: features contain NaN or inf")
        M = _mask_from_labels(Y) if mask is None else np.asarray(mask, dtype=bool)
        if M.shape != Y.shape:
            raise DataError(f"probe.fit: mask {M.shape} does not match Y {Y.shape}")
        if M.any() and not np.isin(Y[M], (0.0, 1.0)).all():
            raise DataError("probe.fit: labels under the mask must be 0 or 1 (apply a LabelPolicy first)")
        g = np.arange(X.shape[0]) if groups is None else np.asarray(groups)
        if g.shape != (X.shape[0],):
            raise DataError(f"probe.fit: groups must be (N,) = ({X.shape[0]},); got {g.shape}")
        names = class_names_for(Y.shape[1], self.class_names)

        self._scaler = StandardScaler().fit(X)
        Xs = self._scaler.transform(X)
        self.fits, self._models = [], []
        for c, name in enumerate(names):
            rows = M[:, c]
            fit, model = self._fit_class(name, Xs, X, Y[rows, c], rows, g[rows])
            self.fits.append(fit)
            self._models.append(model)
        return self

    def _fit_class(
        self, name: str, Xs: np.ndarray, X: np.ndarray, y: np.ndarray, rows: np.ndarray, groups: np.ndarray
    ) -> tuple[ClassFit, LogisticRegression | None]:
        n, n_pos = int(y.size), int(y.sum())
        if n == 0:
            return ClassFit(name, FitStatus.NO_LABELS, None, CSelection.NOT_APPLICABLE, 0, 0, 0.5,
                            note="no usable labels; predicts 0.5"), None
        prior = n_pos / n
        if n_pos in (0, n):
            return ClassFit(name, FitStatus.CONSTANT, None, CSelection.NOT_APPLICABLE, n, n_pos, prior,
                            note=f"only {'positives' if n_pos else 'negatives'} in the subset; predicts the prior"), None
        c, selection, cv_auc, note = self._choose_c(X[rows], y, groups)
        model, converged = self._logreg(Xs[rows], y, c)
        return ClassFit(name, FitStatus.FITTED, c, selection, n, n_pos, prior, cv_auc, converged, note), model

    def _new_model(self, c: float, warm_start: bool = False) -> LogisticRegression:
        cfg = self.config
        # no `penalty` argument: L2 is the default everywhere, and newer scikit-learn
        # deprecates the argument in favour of l1_ratio (0 = L2)
        return LogisticRegression(
            C=c,
            max_iter=cfg.max_iter,
            class_weight="balanced" if cfg.balanced else None,
            random_state=cfg.seed,
            warm_start=warm_start,
        )

    @staticmethod
    def _fit_quietly(model: LogisticRegression, X: np.ndarray, y: np.ndarray) -> bool:
        """Fit; return False instead of printing when lbfgs hit max_iter."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X, y)
        return not any(issubclass(w.category, ConvergenceWarning) for w in caught)

    def _logreg(self, X: np.ndarray, y: np.ndarray, c: float) -> tuple[LogisticRegression, bool]:
        model = self._new_model(c)
        return model, self._fit_quietly(model, X, y)

    def _cv_folds(self, y: np.ndarray, groups: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
        cfg = self.config
        n_pos = int(y.sum())
        if y.size < cfg.min_samples_for_cv:
            return [], f"{y.size} labelled < {cfg.min_samples_for_cv}: default C"
        if min(n_pos, y.size - n_pos) < cfg.min_per_fold * cfg.cv_folds:
            return [], f"too few of the rarer label value ({min(n_pos, y.size - n_pos)}) for {cfg.cv_folds}-fold CV: default C"
        if np.unique(groups).size < cfg.cv_folds:
            return [], "fewer patients than folds: default C"
        folds = grouped_stratified_folds(y, groups, cfg.cv_folds, np.random.default_rng(cfg.seed))
        for _, val in folds:
            pos = int(y[val].sum())
            if min(pos, val.size - pos) < cfg.min_per_fold:
                return [], f"a grouped fold has < {cfg.min_per_fold} of a label value: default C"
        return folds, ""

    def _choose_c(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, CSelection, float | None, str]:
        """Grouped-CV AUC over ``c_grid`` (ascending, warm-started); ties go to the
        smaller C, i.e. the stronger penalty."""
        folds, why_not = self._cv_folds(y, groups)
        if not folds:
            return self.config.default_c, CSelection.DEFAULT, None, why_not
        grid = sorted(self.config.c_grid)
        scores = np.zeros((len(folds), len(grid)))
        for f, (tr, va) in enumerate(folds):
            scaler = StandardScaler().fit(X[tr])
            Xtr, Xva = scaler.transform(X[tr]), scaler.transform(X[va])
            model = self._new_model(grid[0], warm_start=True)  # each C starts from the last solution
            for j, c in enumerate(grid):
                model.C = c
                self._fit_quietly(model, Xtr, y[tr])
                scores[f, j] = fast_auc(y[va], model.decision_function(Xva))
        mean = scores.mean(axis=0)
        best = int(np.argmax(mean))  # first maximum = smallest C among ties
        return float(grid[best]), CSelection.GROUPED_CV, float(mean[best]), ""

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, C) positive-class probabilities; constant classes give their prior."""
        if self._scaler is None:
            raise DataError("LinearProbe.predict_proba called before fit")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self._scaler.n_features_in_:
            raise DataError(f"probe.predict_proba: expected (N, {self._scaler.n_features_in_}) features; got {X.shape}")
        Xs = self._scaler.transform(X)
        out = np.empty((X.shape[0], len(self.fits)))
        for c, (fit, model) in enumerate(zip(self.fits, self._models)):
            out[:, c] = fit.prior if model is None else model.predict_proba(Xs)[:, 1]
        return out

    @property
    def flagged(self) -> dict[str, FitStatus]:
        """Classes that were not fitted (predict a constant), by name."""
        return {f.name: f.status for f in self.fits if f.status is not FitStatus.FITTED}
