"""The ``linear`` protocol: L2-regularised logistic or multinomial regression on frozen features.

Why not one scikit-learn ``LogisticRegression`` per class and C: a sweep fits every class
of every grid value of every (budget, repeat) cell, hundreds of fits, and with 512-d
ResNet-18 features those sequential solves dominated the whole transfer run. Here every
(C, class) problem of one cell is solved at once by Newton's method: the Hessians of all
problems are one batched matrix product and one batched Cholesky solve, and Newton needs
about ten steps where L-BFGS needed hundreds (a joint L-BFGS over all problems also
stalled on the weakly penalised ones: measured in ``benchmarks/transfer_sweep.py``).
Multinomial problems (categorical tasks), whose Hessian is D*K wide, use L-BFGS along the
regularisation path, each C warm-started from the previous one. The objective is
scikit-learn's (``C * sum(loss) + ||w||^2 / 2``, intercept unpenalised); tests check the
solutions against scikit-learn's.

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
        if seen.size == 1:
            constant = {lvl: float(lvl == seen[0]) for lvl in range(k)}
            return [LinearModel(mean, scale, np.zeros((d, k)), np.zeros(k), True, dict(constant), float(c))
                    for c in c_grid]
        constant = {lvl: 0.0 for lvl in range(k) if counts[lvl] == 0}  # unseen levels: probability 0
        remap = np.full(k, -1)
        remap[seen] = np.arange(seen.size)
        problem = _Problem(torch.from_numpy(Xs[m]), torch.from_numpy(remap[y]), None, True)
        cols, width = seen, k
        solutions = []
    else:
        yv = labels.y.astype(np.float64)
        mv = labels.mask.astype(np.float64)
        n_pos = (yv * mv).sum(axis=0)
        n_lab = mv.sum(axis=0)
        fittable = (n_pos > 0) & (n_pos < n_lab)
        for col in np.flatnonzero(~fittable):
            constant[int(col)] = float(n_pos[col] / n_lab[col]) if n_lab[col] else 0.5
        cols, width = np.flatnonzero(fittable), labels.y.shape[1]
        if cols.size == 0:
            return [LinearModel(mean, scale, np.zeros((d, width)), np.zeros(width), False, dict(constant), float(c))
                    for c in c_grid]
        solutions = _newton_binary(Xs, yv[:, cols], mv[:, cols], [float(c) for c in c_grid], max_iter, tolerance)
    if categorical:
        solutions = problem.solve_path([float(c) for c in c_grid], max_iter, tolerance)
    out = []
    for c, (w, b) in zip(c_grid, solutions):
        wf = np.zeros((d, width))
        bf = np.zeros(width)
        wf[:, cols] = w
        bf[cols] = b
        out.append(LinearModel(mean, scale, wf, bf, categorical, dict(constant), float(c)))
    return out


class _Problem:
    """The penalised likelihood of one cell: all grid values side by side in one (D, G*O)
    matrix, so one evaluation is one matrix product."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, categorical: bool) -> None:
        self.x, self.y, self.mask, self.categorical = x, y, mask, categorical
        self.o = int(y.max().item()) + 1 if categorical else int(y.shape[1])
        # the loss is a sum over rows; dividing by the row count keeps gradients O(1)
        self.norm = float(x.shape[0]) if categorical else float(max(1.0, mask.sum(dim=0).max().item()))

    def objective(self, W: torch.Tensor, b: torch.Tensor, inv_c: torch.Tensor) -> torch.Tensor:
        g = W.shape[1] // self.o
        z = self.x @ W + b
        if self.categorical:
            zz = z.reshape(-1, g, self.o).transpose(0, 1).reshape(-1, self.o)
            loss = F.cross_entropy(zz, self.y.repeat(g), reduction="sum")
        else:
            loss = (F.binary_cross_entropy_with_logits(z, self.y.repeat(1, g), reduction="none")
                    * self.mask.repeat(1, g)).sum()
        # each block divided by its C: the loss curvature has one scale (better conditioned)
        return (loss + 0.5 * ((W**2).sum(dim=0) * inv_c).sum()) / self.norm

    def _run(self, cs: list[float], W0: torch.Tensor | None, b0: torch.Tensor | None, max_iter: int,
             tolerance: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Solve the blocks of ``cs`` jointly; returns W, b and each block's largest |gradient|."""
        d, g, o = self.x.shape[1], len(cs), self.o
        W = (torch.zeros(d, g * o, dtype=torch.float64) if W0 is None else W0.clone()).requires_grad_(True)
        b = (torch.zeros(g * o, dtype=torch.float64) if b0 is None else b0.clone()).requires_grad_(True)
        inv_c = (1.0 / torch.tensor(cs, dtype=torch.float64)).repeat_interleave(o)
        _lbfgs(lambda: self.objective(W, b, inv_c), [W, b], max_iter, tolerance,
               work=float(self.x.shape[0]) * d * g * o)
        W.grad = b.grad = None
        self.objective(W, b, inv_c).backward()
        grad = torch.cat([W.grad.abs().amax(dim=0, keepdim=True), b.grad.abs()[None]], dim=0).amax(dim=0)
        return W.detach(), b.detach(), grad.reshape(g, o).amax(dim=1)

    def solve_path(self, cs: list[float], max_iter: int, tolerance: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each C on its own, in increasing order, warm-started from the previous solution
        (strong penalties converge fastest and are good starts for weaker ones)."""
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        W = b = None
        for j in sorted(range(len(cs)), key=lambda k: cs[k]):
            W, b, _ = self._run([cs[j]], W, b, max_iter, tolerance)
            out[j] = (W.numpy().copy(), b.numpy().copy())
        return [out[j] for j in range(len(cs))]


def _newton_binary(X: np.ndarray, Y: np.ndarray, M: np.ndarray, cs: list[float], max_iter: int, tolerance: float,
                   chunk_cells: int = 40_000_000) -> list[tuple[np.ndarray, np.ndarray]]:
    """Penalised logistic regressions of every column for every C, by damped Newton steps.

    ``X`` (n, D) standardised features, ``Y``/``M`` (n, O) targets and masks. Returns per C
    the weights (D, O) and intercepts (O,). All columns of one C are solved at once (one
    batched Hessian and Cholesky solve per step), and the C values in increasing order,
    each warm-started from the previous solution, so weak penalties take a few steps.
    With fewer rows than features the problem is solved exactly in the rows' span
    (``X = U S V^T``, ``w = V beta``: the penalty ``||w||^2 = ||beta||^2`` is unchanged).
    """
    n, d = X.shape
    basis = None
    if n < d:
        u, sv, vt = np.linalg.svd(X, full_matrices=False)
        keep = sv > sv[0] * 1e-10 if sv.size else np.zeros(0, dtype=bool)
        X, basis = u[:, keep] * sv[keep], vt[keep].T  # (n, r) coordinates, (d, r) basis
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    W = None
    for j in sorted(range(len(cs)), key=lambda k: cs[k]):
        W = _newton_one_c(X, Y, M, 1.0 / cs[j], W, max_iter, tolerance, chunk_cells)
        w, b = W[:-1], W[-1]
        out[j] = ((basis @ w) if basis is not None else w.copy(), b.copy())
    return [out[j] for j in range(len(cs))]


def _newton_one_c(X: np.ndarray, Y: np.ndarray, M: np.ndarray, lam: float, W0: np.ndarray | None, max_iter: int,
                  tolerance: float, chunk_cells: int) -> np.ndarray:
    """(D + 1, O): weights and intercept (last row) of every column at penalty ``lam``."""
    n, d = X.shape
    o = Y.shape[1]
    xa = torch.from_numpy(np.concatenate([X, np.ones((n, 1))], axis=1))  # intercept as the last column
    y, m = torch.from_numpy(Y), torch.from_numpy(M)
    pen = torch.full((d + 1,), float(lam), dtype=torch.float64)
    pen[-1] = 0.0
    W = torch.zeros(d + 1, o, dtype=torch.float64) if W0 is None else torch.from_numpy(W0).clone()
    norm = float(max(1.0, M.sum(axis=0).max()))
    xa32 = xa.float()
    eye = torch.eye(d + 1, dtype=torch.float32) * 1e-6

    def objective(w: torch.Tensor) -> torch.Tensor:  # (o,)
        loss = (F.binary_cross_entropy_with_logits(xa @ w, y, reduction="none") * m).sum(dim=0)
        return (loss + 0.5 * (pen[:, None] * w * w).sum(dim=0)) / norm

    f = objective(W)
    active = torch.ones(o, dtype=torch.bool)
    per_chunk = max(1, int(chunk_cells // max(1, n * (d + 1))))
    with few_threads(float(n) * d * d * o / 10):
        for _ in range(max(1, max_iter)):
            p = torch.sigmoid(xa @ W)
            grad = (xa.T @ (m * (p - y)) + pen[:, None] * W) / norm
            active &= grad.abs().amax(dim=0) > tolerance
            if not active.any():
                break
            idx = torch.nonzero(active).flatten()
            s = (m * p * (1 - p))[:, idx].float()
            step = torch.empty(d + 1, idx.numel(), dtype=torch.float64)
            for a in range(0, idx.numel(), per_chunk):
                cols = slice(a, a + per_chunk)
                sq = s[:, cols].T.sqrt()[:, :, None] * xa32[None]  # (c, n, d+1)
                # the Hessian in single precision: it only sets the step, the gradient is exact
                H = (sq.transpose(1, 2) @ sq) / norm + torch.diag(pen.float() / norm) + eye
                L, _ = torch.linalg.cholesky_ex(H)
                rhs = grad[:, idx[cols]].T[:, :, None].float()
                step[:, cols] = torch.cholesky_solve(rhs, L)[:, :, 0].T.double()
            # backtracking per column: accept a step that decreases its own objective enough
            t = torch.ones(idx.numel(), dtype=torch.float64)
            decrease = (grad[:, idx] * step).sum(dim=0)
            for _ in range(30):
                trial = W.clone()
                trial[:, idx] = W[:, idx] - t * step
                f_new = objective(trial)[idx]
                ok = f_new <= f[idx] - 1e-4 * t * decrease
                if bool(ok.all()):
                    break
                t = torch.where(ok, t, t * 0.5)
            W[:, idx] = W[:, idx] - t * step
            f = objective(W)
    return W.numpy()


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
