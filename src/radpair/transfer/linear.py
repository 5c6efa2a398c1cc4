"""The ``linear`` protocol: L2-regularised logistic or multinomial regression on frozen features.

Why not one scikit-learn ``LogisticRegression`` per class and C: a sweep fits every class
of every grid value of every (budget, repeat) cell, hundreds of fits, and with 512-d
ResNet-18 features scikit-learn's per-fit overhead and sequential solves dominated the
whole transfer run. Here every (C, class) problem of one cell is solved at once by one
L-BFGS run over their sum: the problems share no parameters, so the sum's minimum is each
problem's minimum, and one batched matrix product evaluates all of them. The objective is
scikit-learn's (``C * sum(loss) + ||w||^2 / 2``, intercept unpenalised); a test checks
the solutions against scikit-learn's.

Classes (or levels) that the training subset holds only one value of cannot be fitted;
they predict the subset's rate, which the results record.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from radpair.errors import DataError
from radpair.tasks.schema import TaskLabels


@dataclass
class LinearModel:
    """Standardisation plus a linear map; ``predict_proba`` gives (N, C) or (N, K)."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray  # (D, O) on standardised features
    bias: np.ndarray  # (O,)
    categorical: bool
    constant: dict[int, float]  # output column -> probability for unfittable columns
    c: float

    def logits(self, X: np.ndarray) -> np.ndarray:
        Xs = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return Xs @ self.weight + self.bias

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.logits(X)
        if self.categorical:
            z = z - z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
        else:
            p = 1.0 / (1.0 + np.exp(-z))
        for col, value in self.constant.items():
            p[:, col] = value
        if self.categorical and self.constant:
            p /= p.sum(axis=1, keepdims=True)
        return p

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save (safetensors); the constant columns are stored as a mask + value."""
        const_mask = np.zeros(self.bias.shape, dtype=np.float32)
        const_value = np.zeros(self.bias.shape, dtype=np.float32)
        for col, v in self.constant.items():
            const_mask[col], const_value[col] = 1.0, v
        return {"mean": self.mean.astype(np.float32), "scale": self.scale.astype(np.float32),
                "weight": self.weight.astype(np.float32), "bias": self.bias.astype(np.float32),
                "constant_mask": const_mask, "constant_value": const_value}


def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return (X - mean) / scale, mean, scale


def fit_linear_grid(X: np.ndarray, labels: TaskLabels, c_grid: list[float], max_iter: int = 500,
                    tolerance: float = 1e-6) -> list[LinearModel]:
    """One :class:`LinearModel` per value of ``c_grid``, fitted on features ``X`` (N, D)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != len(labels):
        raise DataError(f"linear probe: features {X.shape} do not match {len(labels)} labelled rows")
    if not np.isfinite(X).all():
        raise DataError("linear probe: features contain NaN or inf")
    Xs, mean, scale = _standardise(X)
    n, d = Xs.shape
    cs = torch.tensor([float(c) for c in c_grid], dtype=torch.float64)
    g = cs.numel()
    xt = torch.from_numpy(Xs)
    categorical = labels.schema.kind.is_categorical
    constant: dict[int, float] = {}
    if categorical:
        k = labels.schema.n_levels
        m = labels.mask
        y = labels.y[m]
        counts = np.bincount(y, minlength=k)
        seen = np.flatnonzero(counts > 0)
        if seen.size == 0:
            raise DataError("linear probe: no usable training label")
        for lvl in range(k):
            if counts[lvl] == 0:
                constant[lvl] = 0.0
        if seen.size == 1:
            constant = {lvl: float(lvl == seen[0]) for lvl in range(k)}
            return [LinearModel(mean, scale, np.zeros((d, k)), np.zeros(k), True, dict(constant), float(c)) for c in c_grid]
        # fit the seen levels only; unseen levels get probability 0
        remap = {int(v): i for i, v in enumerate(seen)}
        yt = torch.tensor([remap[int(v)] for v in y], dtype=torch.long)
        xm = xt[torch.from_numpy(np.flatnonzero(m))]
        o = seen.size
        # all grid values side by side in one (D, G*O) matrix: one GEMM per evaluation
        W = torch.zeros(d, g * o, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(g * o, dtype=torch.float64, requires_grad=True)
        inv_c = (1.0 / cs).repeat_interleave(o)
        yg = yt.repeat(g)

        def objective() -> torch.Tensor:
            z = (xm @ W + b).reshape(-1, g, o).transpose(0, 1).reshape(-1, o)  # (G*n, O)
            ce = F.cross_entropy(z, yg, reduction="sum")
            # each block divided by its C: the loss curvature has one scale (better conditioned)
            return (ce + 0.5 * ((W**2).sum(dim=0) * inv_c).sum()) / max(1, yt.numel())

        _lbfgs(objective, [W, b], max_iter, tolerance, work=float(xm.shape[0]) * d * g * o)
        out = []
        Wd = W.detach().numpy().reshape(d, g, o)
        bd = b.detach().numpy().reshape(g, o)
        for j, c in enumerate(c_grid):
            wf = np.zeros((d, k))
            bf = np.zeros(k)
            wf[:, seen] = Wd[:, j]
            bf[seen] = bd[j]
            out.append(LinearModel(mean, scale, wf, bf, True, dict(constant), float(c)))
        return out

    yv = labels.y.astype(np.float64)
    mv = labels.mask.astype(np.float64)
    n_pos = (yv * mv).sum(axis=0)
    n_lab = mv.sum(axis=0)
    fit_cols = np.flatnonzero((n_pos > 0) & (n_pos < n_lab))
    for col in np.flatnonzero(~((n_pos > 0) & (n_pos < n_lab))):
        constant[int(col)] = float(n_pos[col] / n_lab[col]) if n_lab[col] else 0.5
    cols = labels.y.shape[1]
    if fit_cols.size == 0:
        return [LinearModel(mean, scale, np.zeros((d, cols)), np.zeros(cols), False, dict(constant), float(c))
                for c in c_grid]
    yt = torch.from_numpy(yv[:, fit_cols])
    mt = torch.from_numpy(mv[:, fit_cols])
    o = fit_cols.size
    # all (C, class) problems side by side in one (D, G*O) matrix: one GEMM per evaluation
    W = torch.zeros(d, g * o, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(g * o, dtype=torch.float64, requires_grad=True)
    inv_c = (1.0 / cs).repeat_interleave(o)
    yg, mg = yt.repeat(1, g), mt.repeat(1, g)
    norm = float(max(1.0, mt.sum(dim=0).max().item()))

    def objective() -> torch.Tensor:
        z = xt @ W + b
        bce = (F.binary_cross_entropy_with_logits(z, yg, reduction="none") * mg).sum()
        # each block divided by its C: the loss curvature has one scale (better conditioned)
        return (bce + 0.5 * ((W**2).sum(dim=0) * inv_c).sum()) / norm

    _lbfgs(objective, [W, b], max_iter, tolerance, work=float(n) * d * g * o)
    out = []
    Wd = W.detach().numpy().reshape(d, g, o)
    bd = b.detach().numpy().reshape(g, o)
    for j, c in enumerate(c_grid):
        wf = np.zeros((d, cols))
        bf = np.zeros(cols)
        wf[:, fit_cols] = Wd[:, j]
        bf[fit_cols] = bd[j]
        out.append(LinearModel(mean, scale, wf, bf, False, dict(constant), float(c)))
    return out


@contextlib.contextmanager
def few_threads(work: float, threshold: float = 2e7):
    """One thread for small problems: L-BFGS makes hundreds of tiny kernel calls, and on a
    busy 2-core machine two threads made a 10-row fit 20x slower than one."""
    before = torch.get_num_threads()
    if work < threshold and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _lbfgs(objective, params: list[torch.Tensor], max_iter: int, tolerance: float, work: float) -> int:
    with few_threads(work):
        return _run_lbfgs(objective, params, max_iter, tolerance)


def _run_lbfgs(objective, params: list[torch.Tensor], max_iter: int, tolerance: float) -> int:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.5),
                            tolerance_grad=tolerance, tolerance_change=1e-12, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    return opt.state[opt._params[0]].get("n_iter", 0)


__all__ = ["LinearModel", "fit_linear_grid"]
