"""Optimisers and learning-rate schedules built from :class:`OptimConfig`.

The recipes of the papers are configurations of this one builder, not separate code
paths (``configs/recipes/``):

* Chauhan et al. 2020 — AdamW, linear warm-up then linear decay (``schedule: linear``);
* RadTex (VirTex recipe) — SGD + Nesterov momentum wrapped in LookAhead, weight decay,
  linear warm-up for 5 % of training then cosine decay;
* TIMNet / TieNet — Adam at a constant rate (``schedule: constant, warmup_steps: 0``);
* ConVIRT (report-sections study) — AdamW.

Norms, biases and other 0/1-D parameters get no weight decay (decaying a LayerNorm gain
or a bias towards zero only hurts), and ``lr_scale`` gives modules their own rate (VirTex
trains the visual backbone and the textual head at different rates).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from radpair_train.config import OptimConfig
from radpair_train.lookahead import Lookahead


def _scale_for(name: str, lr_scale: dict[str, float]) -> float:
    best, scale = -1, 1.0
    for prefix, value in lr_scale.items():
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
            best, scale = len(prefix), float(value)
    return scale


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    exclude_norm_and_bias: bool,
    lr: float | None = None,
    lr_scale: dict[str, float] | None = None,
) -> list[dict]:
    """Groups by (decay or not, learning-rate multiplier); norms, biases and scalars undecayed.

    Each group records ``lr_scale`` and ``names`` so logs and tests can tell them apart.
    Parameters with ``requires_grad=False`` (frozen encoders) are left out.
    """
    lr_scale = lr_scale or {}
    groups: dict[tuple[bool, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = exclude_norm_and_bias and (p.ndim <= 1 or name.endswith(".bias"))
        scale = _scale_for(name, lr_scale)
        key = (not no_decay, scale)
        if key not in groups:
            group = {"params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale}
            if lr is not None:
                group["lr"] = lr * scale
            groups[key] = group
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    # decayed groups first, then by scale, so group 0 is the "main" rate that logs report
    return [groups[k] for k in sorted(groups, key=lambda k: (not k[0], -k[1]))]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay, cfg.no_decay_norm_and_bias, cfg.lr, cfg.lr_scale)
    if not groups:
        raise ValueError("the model has no trainable parameters (is every encoder frozen?)")
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.name == "adam":
        # Adam's weight_decay is an L2 penalty added to the gradient (TieNet's "L2 regularisation")
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def build_lookahead(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> Lookahead | None:
    """Attach LookAhead when ``lookahead_steps`` > 0; it then runs after every optimiser step."""
    if cfg.lookahead_steps <= 0:
        return None
    return Lookahead(optimizer, cfg.lookahead_steps, cfg.lookahead_alpha)


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    steps = round(cfg.warmup_fraction * total_steps) if cfg.warmup_fraction is not None else cfg.warmup_steps
    return max(0, min(steps, total_steps - 1))


def lr_factor(cfg: OptimConfig, total_steps: int):
    """The multiplier of the base rate at each step: linear warm-up, then the decay shape."""
    warmup = warmup_steps(cfg, total_steps)
    floor = cfg.min_lr_ratio

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        progress = min(max(progress, 0.0), 1.0)
        if cfg.schedule == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return floor + (1.0 - floor) * shape

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))
