"""How a configuration is judged on validation labels: one score for every protocol.

Every arm chooses among its grid settings, and its early-stopping point, by the same rule:
the task's macro AUC on the validation draw (for an ordinal task the mean of the
dichotomised AUCs), ties broken by the lower validation loss. With very few labels a
class may have no positive in the validation draw; it is then left out of the macro, and
when no class can be scored the loss alone decides. The score is computed with a
fast Mann-Whitney AUC because early stopping calls it after every epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radpair.evaluation.metrics import fast_auc
from radpair.tasks.schema import TaskLabels


def _binary_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    if y.size == 0 or y.min() == y.max():
        return None
    return fast_auc(y, s)


def validation_score(labels: TaskLabels, probs: np.ndarray) -> tuple[float, float]:
    """(macro AUC or NaN, mean loss) of ``probs`` on validation ``labels``."""
    eps = 1e-7
    p = np.asarray(probs, dtype=np.float64)
    if p.size and not np.isfinite(p).all():  # a diverged model: never selected
        return math.nan, math.inf
    p = np.clip(p, eps, 1 - eps)
    aucs: list[float] = []
    if labels.schema.kind.is_categorical:
        m = labels.mask
        y = labels.y[m]
        pm = p[m]
        loss = float(-np.log(pm[np.arange(y.size), y]).mean()) if y.size else math.nan
        k = pm.shape[1]
        if labels.schema.kind.value == "ordinal":
            for cut in range(k - 1):
                a = _binary_auc((y > cut).astype(int), pm[:, cut + 1:].sum(axis=1))
                if a is not None:
                    aucs.append(a)
        else:
            for c in range(k):
                a = _binary_auc((y == c).astype(int), pm[:, c])
                if a is not None:
                    aucs.append(a)
    else:
        losses = []
        for c in range(labels.y.shape[1]):
            m = labels.mask[:, c]
            y = labels.y[m, c].astype(int)
            pc = p[m, c]
            if y.size:
                losses.append(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean())
            a = _binary_auc(y, pc)
            if a is not None:
                aucs.append(a)
        loss = float(np.mean(losses)) if losses else math.nan
    return (float(np.mean(aucs)) if aucs else math.nan), loss


def better(a: tuple[float, float], b: tuple[float, float] | None) -> bool:
    """Is validation result ``a`` (score, loss) better than ``b``? NaN scores lose to any
    number; equal scores compare by loss."""
    if b is None:
        return True
    sa, la = a
    sb, lb = b
    if math.isnan(sa) != math.isnan(sb):
        return not math.isnan(sa)
    if not math.isnan(sa) and sa != sb:
        return sa > sb
    if math.isnan(la):
        return False
    return math.isnan(lb) or la < lb


@dataclass
class EarlyStopping:
    """Tracks the best evaluation; ``step()`` says whether to keep going."""

    patience: int
    best: tuple[float, float] | None = None
    best_at: int = -1
    since_best: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def update(self, at: int, result: tuple[float, float]) -> bool:
        """Record evaluation ``result`` made at step/epoch ``at``; True when it is the new best."""
        self.history.append({"at": at, "score": _num(result[0]), "loss": _num(result[1])})
        if better(result, self.best):
            self.best, self.best_at, self.since_best = result, at, 0
            return True
        self.since_best += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.since_best >= self.patience


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


__all__ = ["EarlyStopping", "better", "validation_score"]
