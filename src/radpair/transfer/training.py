"""Gradient-trained protocols: ``frozen-head`` (on cached features) and ``finetune``.

Both try every (learning rate, weight decay) of their grid, evaluate the validation draw
during training, and keep the weights of the best evaluation (early stopping with
patience); the grid value whose best evaluation is best wins. All randomness (head
initialisation, batch order, augmentation) comes from generators seeded by the cell, so
a job gives the same result in any process and the global RNG is never touched.

The linear frozen head trains all grid values at once: their weights are one (G, D, O)
tensor updated by a batched AdamW, so a step is one batched matrix product instead of
G optimiser calls. On cached features that removes the per-step overhead that otherwise
dominated (measured in ``benchmarks/transfer_sweep.py``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radpair.data.tensors import images_to_tensor
from radpair.tasks.schema import TaskLabels
from radpair.transfer.heads import (
    TimnetHead,
    build_start_encoder,
    eval_mode,
    init_module,
    task_loss,
    to_probs,
    torch_generator,
)
from radpair.transfer.selection import EarlyStopping, validation_score


@dataclass
class GridFit:
    """The outcome of one grid value: its best validation result and the weights there."""

    config: dict[str, float]
    best: tuple[float, float]
    best_at: int
    history: list[dict[str, Any]]
    state: dict[str, torch.Tensor]
    val_probs: np.ndarray
    steps: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        score, loss = self.best
        return {**self.config, "val_score": None if math.isnan(score) else round(score, 6),
                "val_loss": None if math.isnan(loss) else round(loss, 6), "best_at": self.best_at,
                "steps": self.steps, "seconds": round(self.seconds, 2), **self.extra}


def _targets(labels: TaskLabels) -> tuple[torch.Tensor, torch.Tensor]:
    y, m = labels.targets()
    return torch.from_numpy(y), torch.from_numpy(m)


# ---- frozen head: linear, all grid values at once --------------------------------------------
def train_linear_heads(x_train: np.ndarray, train: TaskLabels, x_val: np.ndarray, val: TaskLabels,
                       grid: list[dict[str, float]], batch_size: int, max_epochs: int, patience: int,
                       seed: tuple[int, ...], optimizer: str = "adamw") -> list[GridFit]:
    """Linear heads on frozen pooled features, one per grid value, trained side by side.

    One thread: the steps are tiny, and two threads made them about twice as slow here.
    """
    from radpair.transfer.linear import few_threads

    with few_threads(0.0):
        return _train_linear_heads(x_train, train, x_val, val, grid, batch_size, max_epochs, patience, seed,
                                   optimizer)


def _train_linear_heads(x_train: np.ndarray, train: TaskLabels, x_val: np.ndarray, val: TaskLabels,
                        grid: list[dict[str, float]], batch_size: int, max_epochs: int, patience: int,
                        seed: tuple[int, ...], optimizer: str = "adamw") -> list[GridFit]:
    t0 = time.perf_counter()
    categorical = train.schema.kind.is_categorical
    x_train = np.asarray(x_train, dtype=np.float32)
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0).astype(np.float32)
    xt = torch.from_numpy((x_train - mean) / scale)
    xv = torch.from_numpy((np.asarray(x_val, dtype=np.float32) - mean) / scale)
    yt, mt = _targets(train)
    n, d = xt.shape
    o = train.schema.n_outputs(len(train.columns))
    g = len(grid)
    gen = torch_generator(*seed, 1)
    bound = 1.0 / math.sqrt(d)
    W = (torch.rand(g, d, o, generator=gen) * 2 - 1) * bound
    b = (torch.rand(g, o, generator=gen) * 2 - 1) * bound
    W.requires_grad_(True)
    b.requires_grad_(True)
    lr = torch.tensor([c["lr"] for c in grid], dtype=torch.float32) * output_rate_scale(optimizer, categorical, o)
    wd = torch.tensor([c["weight_decay"] for c in grid], dtype=torch.float32)
    batched = _BatchedSGD if optimizer == "sgd" else _BatchedAdamW
    opt = batched([W, b], lr, decay=[wd, torch.zeros_like(wd)])
    stoppers = [EarlyStopping(patience) for _ in range(g)]
    best_w = W.detach().clone()
    best_b = b.detach().clone()
    best_val = [np.zeros(0)] * g
    rng = np.random.default_rng(np.random.SeedSequence(list(seed) + [2]))
    bs = max(1, min(batch_size, n))
    steps = 0
    for epoch in range(1, max_epochs + 1):
        order = rng.permutation(n)
        for start in range(0, n - bs + 1, bs):
            rows = torch.from_numpy(order[start:start + bs])
            z = torch.einsum("bd,gdo->gbo", xt[rows], W) + b[:, None, :]
            loss = _grid_loss(z, yt[rows], mt[rows], categorical).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        with torch.no_grad():
            zv = torch.einsum("bd,gdo->gbo", xv, W) + b[:, None, :]
            pv = to_probs(zv, categorical).numpy()
        for j in range(g):
            if stoppers[j].exhausted:
                continue
            if stoppers[j].update(epoch, validation_score(val, pv[j])):
                best_w[j] = W.detach()[j]
                best_b[j] = b.detach()[j]
                best_val[j] = pv[j].copy()
            if stoppers[j].exhausted:
                opt.freeze(j)
        if all(s.exhausted for s in stoppers):
            break
    seconds = time.perf_counter() - t0
    fits = []
    for j, cfg in enumerate(grid):
        state = {"mean": torch.from_numpy(mean), "scale": torch.from_numpy(scale),
                 "weight": best_w[j].T.contiguous(), "bias": best_b[j].clone()}
        fits.append(GridFit(dict(cfg), stoppers[j].best or (math.nan, math.nan), stoppers[j].best_at,
                            stoppers[j].history, state, best_val[j], steps, seconds / g))
    return fits


def linear_head_predict(state: dict[str, torch.Tensor], x: np.ndarray, categorical: bool) -> np.ndarray:
    xs = (torch.from_numpy(np.asarray(x, dtype=np.float32)) - state["mean"]) / state["scale"]
    return to_probs(xs @ state["weight"].T + state["bias"], categorical).numpy()


def _grid_loss(z: torch.Tensor, y: torch.Tensor, m: torch.Tensor, categorical: bool) -> torch.Tensor:
    """(G,) task losses of grid logits (G, B, O)."""
    g, bsz, o = z.shape
    if categorical:
        mf = m.float()
        ce = F.cross_entropy(z.reshape(g * bsz, o), y.long().repeat(g), reduction="none").reshape(g, bsz)
        return (ce * mf).sum(dim=1) / mf.sum().clamp_min(1.0)
    mf = m.float()
    bce = F.binary_cross_entropy_with_logits(z, y.expand_as(z), reduction="none") * mf
    return bce.sum(dim=(1, 2)) / mf.sum().clamp_min(1.0)


class _BatchedOptimizer:
    """One learning rate and weight decay per grid value (the first axis of every parameter)."""

    params: list[torch.Tensor]
    lr: torch.Tensor

    def freeze(self, j: int) -> None:
        self.lr[j] = 0.0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class _BatchedAdamW(_BatchedOptimizer):
    """AdamW whose learning rate and weight decay differ along the first (grid) axis.

    ``torch.optim.AdamW`` takes one learning rate per parameter group; putting each grid
    value in its own group would bring back G small updates per step. Same update rule
    (decoupled decay, bias-corrected moments, eps 1e-8).
    """

    def __init__(self, params: list[torch.Tensor], lr: torch.Tensor, decay: list[torch.Tensor],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.lr, self.decay = params, lr.clone(), decay
        self.betas, self.eps, self.t = betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v, wd in zip(self.params, self.m, self.v, self.decay):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.ndim - 1)
            lr = self.lr.view(shape)
            p.mul_(1 - lr * wd.view(shape))
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.sub_(lr * (m / c1) / ((v / c2).sqrt() + self.eps))


class _BatchedSGD(_BatchedOptimizer):
    """SGD with momentum 0.9 and coupled (L2) weight decay, one learning rate and decay per
    grid value, as ``torch.optim.SGD(momentum=0.9, weight_decay=wd)`` applies them."""

    def __init__(self, params: list[torch.Tensor], lr: torch.Tensor, decay: list[torch.Tensor],
                 momentum: float = 0.9) -> None:
        self.params, self.lr, self.decay, self.momentum = params, lr.clone(), decay, momentum
        self.buf: list[torch.Tensor | None] = [None] * len(params)

    @torch.no_grad()
    def step(self) -> None:
        for i, (p, wd) in enumerate(zip(self.params, self.decay)):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.ndim - 1)
            d = p.grad + wd.view(shape) * p
            buf = self.buf[i]
            self.buf[i] = d.clone() if buf is None else buf.mul_(self.momentum).add_(d)
            p.sub_(self.lr.view(shape) * self.buf[i])


def output_rate_scale(optimizer: str, categorical: bool, n_outputs: int) -> float:
    """The factor on a multi-label head's per-output weights under SGD.

    The task loss averages binary cross-entropy over rows *and* outputs, so each output's
    weights get 1/O of the gradient a one-finding model gets. AdamW does not see the scale of
    a gradient; SGD does, and the papers that train with SGD fit one binary model per
    finding (RadTex's ``per_class_models``) at the rate they state. Scaling the per-output
    weights' rate by O gives each output that model's step, while the shared encoder keeps the
    mean over findings. With coupled weight decay the decay is scaled with it."""
    return float(n_outputs) if optimizer == "sgd" and not categorical and n_outputs > 1 else 1.0


def make_optimizer(name: str, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The protocol's optimiser (``FinetuneSettings.optimizer``) over parameter groups that
    carry their own ``lr`` and ``weight_decay``."""
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=0.9)
    return torch.optim.AdamW(groups)


# ---- frozen head: TIMNet's shallow CNN on the feature map --------------------------------------
def train_timnet_heads(f_train: np.ndarray, train: TaskLabels, f_val: np.ndarray, val: TaskLabels,
                       grid: list[dict[str, float]], batch_size: int, max_epochs: int, patience: int,
                       seed: tuple[int, ...], channels: int = 256, hidden: int = 512,
                       optimizer: str = "adamw") -> list[GridFit]:
    categorical = train.schema.kind.is_categorical
    xt = torch.from_numpy(np.asarray(f_train, dtype=np.float32))
    xv = torch.from_numpy(np.asarray(f_val, dtype=np.float32))
    yt, mt = _targets(train)
    n = xt.shape[0]
    o = train.schema.n_outputs(len(train.columns))
    bs = max(2, min(batch_size, n))
    fits = []
    for j, cfg in enumerate(grid):
        t0 = time.perf_counter()
        head = TimnetHead(xt.shape[1], o, channels, hidden)
        init_module(head, torch_generator(*seed, 10 + j))
        scale = output_rate_scale(optimizer, categorical, o)
        groups = [{"params": list(head.parameters()), "lr": cfg["lr"], "weight_decay": cfg["weight_decay"]}]
        if scale != 1.0:  # only the output layer is per finding
            out_params = list(head.out.parameters())
            groups = [{**groups[0], "params": [q for q in head.parameters() if all(q is not r for r in out_params)]},
                      {**groups[0], "params": out_params, "lr": cfg["lr"] * scale}]
        opt = make_optimizer(optimizer, groups)
        stop = EarlyStopping(patience)
        best_state, best_val = copy.deepcopy(head.state_dict()), np.zeros(0)
        rng = np.random.default_rng(np.random.SeedSequence(list(seed) + [20 + j]))
        steps = 0
        for epoch in range(1, max_epochs + 1):
            head.train()
            order = rng.permutation(n)
            # BatchNorm needs two rows; a trailing single row joins the previous batch
            for start in range(0, n - bs + 1, bs):
                stop_at = n if start + 2 * bs > n else start + bs
                rows = torch.from_numpy(order[start:stop_at])
                loss = task_loss(head(xt[rows]), yt[rows], mt[rows], categorical)
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
            with torch.no_grad(), eval_mode(head):
                pv = to_probs(head(xv), categorical).numpy()
            if stop.update(epoch, validation_score(val, pv)):
                best_state, best_val = copy.deepcopy(head.state_dict()), pv
            if stop.exhausted:
                break
        fits.append(GridFit(dict(cfg), stop.best or (math.nan, math.nan), stop.best_at, stop.history, best_state,
                            best_val, steps, time.perf_counter() - t0))
    return fits


def timnet_head_predict(state: dict[str, torch.Tensor], fmap: np.ndarray, n_outputs: int, categorical: bool,
                        channels: int = 256, hidden: int = 512) -> np.ndarray:
    head = TimnetHead(fmap.shape[1], n_outputs, channels, hidden)
    head.load_state_dict(state)
    with torch.no_grad(), eval_mode(head):
        return to_probs(head(torch.from_numpy(np.asarray(fmap, dtype=np.float32))), categorical).numpy()


# ---- finetune -----------------------------------------------------------------------------------
class Classifier(nn.Module):
    """Encoder plus linear head: what ``finetune`` trains and saves."""

    def __init__(self, encoder: nn.Module, n_outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, n_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))


def _schedule(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def predict_images(model: nn.Module, images: np.ndarray, categorical: bool, device: torch.device,
                   batch_size: int = 256) -> np.ndarray:
    out = []
    with torch.inference_mode(), eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = images_to_tensor(images[start:start + batch_size]).to(device)
            out.append(to_probs(model(x), categorical).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def finetune_one(job: dict[str, Any]) -> GridFit:
    """Train one grid value of one cell; ``job`` is plain data so it can go to a worker process.

    Keys: ``corpus`` (folder), ``train_rows``/``val_rows`` (image rows), ``train``/``val``
    (:class:`TaskLabels`), ``start`` (weights, arch, seed), ``config`` (lr, weight_decay),
    ``settings`` (:class:`FinetuneSettings`), ``seed`` (tuple), ``device``, ``threads``.
    """
    from radpair.data.augment import BatchAugment
    from radpair.data.corpus import Corpus

    t0 = time.perf_counter()
    if job.get("threads"):  # only in a worker process of its own
        torch.set_num_threads(int(job["threads"]))
    s = job["settings"]
    cfg = job["config"]
    train: TaskLabels = job["train"]
    val: TaskLabels = job["val"]
    categorical = train.schema.kind.is_categorical
    device = torch.device(job.get("device", "cpu"))
    corpus = Corpus.open(job["corpus"])
    x_train = corpus.read_images(np.asarray(job["train_rows"]))
    x_val = corpus.read_images(np.asarray(job["val_rows"]))
    start = job["start"]
    encoder = build_start_encoder(start["weights"], start["arch"], start["seed"])
    model = Classifier(encoder, train.schema.n_outputs(len(train.columns)))
    init_module(model.head, torch_generator(*job["seed"], 1))
    model.to(device)
    decay, no_decay, head_params = [], [], list(model.head.parameters())
    for p in model.encoder.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
    opt = make_optimizer(s.optimizer, [
        {"params": decay, "lr": lr, "weight_decay": wd},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"params": head_params, "lr": lr * s.head_lr_scale * output_rate_scale(s.optimizer, categorical,
                                                                                model.head.out_features),
         "weight_decay": wd},
    ])
    base_lrs = [grp["lr"] for grp in opt.param_groups]
    yt, mt = _targets(train)
    n = len(train)
    bs = max(2, min(s.batch_size, n))
    steps_per_epoch = max(1, n // bs)
    eval_every = s.eval_every or int(np.clip(steps_per_epoch, 10, 50))
    total = s.step_limit(n)
    warmup = int(round(s.warmup_fraction * total))
    augment = BatchAugment(s.augment) if s.augment.enabled else None
    aug_gen = torch_generator(*job["seed"], 3)
    rng = np.random.default_rng(np.random.SeedSequence(list(job["seed"]) + [4]))
    stop = EarlyStopping(s.patience)
    best_state = copy.deepcopy(model.state_dict())
    best_val = np.zeros(0)
    order = np.zeros(0, dtype=np.int64)
    step = 0
    while step < total:
        if step % steps_per_epoch == 0:
            order = rng.permutation(n)
        i = step % steps_per_epoch
        rows = order[i * bs:(i + 1) * bs]
        x = images_to_tensor(x_train[rows]).to(device)
        if augment is not None:
            x = augment(x, aug_gen)
        for grp, base in zip(opt.param_groups, base_lrs):
            grp["lr"] = base * _schedule(step, total, warmup)
        model.train()
        loss = task_loss(model(x), yt[rows].to(device), mt[rows].to(device), categorical)
        if not torch.isfinite(loss):
            break  # a diverging grid value: its best evaluation so far stands
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % eval_every == 0 or step == total:
            pv = predict_images(model, x_val, categorical, device)
            if stop.update(step, validation_score(val, pv)):
                best_state = copy.deepcopy(model.state_dict())
                best_val = pv
            if stop.exhausted and step >= s.min_steps:
                break
    if best_val.size == 0:  # diverged before the first evaluation: what is kept is the start
        model.load_state_dict(best_state)
        best_val = predict_images(model, x_val, categorical, device)
        stop.update(step, validation_score(val, best_val))
    state = {k: v.detach().cpu() for k, v in best_state.items()}
    return GridFit(dict(cfg), stop.best or (math.nan, math.nan), stop.best_at, stop.history, state, best_val, step,
                   time.perf_counter() - t0, {"eval_every": eval_every, "batch_size": bs})


__all__ = ["Classifier", "GridFit", "finetune_one", "linear_head_predict", "predict_images", "timnet_head_predict",
           "train_linear_heads", "train_timnet_heads"]
