"""Optimisers and learning-rate schedules built from :class:`OptimConfig`.

The recipes of the papers (AdamW + linear warm-up, SGD + warm-up + cosine, constant Adam)
are configurations of this one builder, not separate code paths.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from radpair_train.config import OptimConfig


def parameter_groups(model: nn.Module, weight_decay: float, exclude_norm_and_bias: bool) -> list[dict]:
    """Two groups: weights with decay; norms, biases and scalars without (standard practice)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if exclude_norm_and_bias and (p.ndim <= 1 or name.endswith(".bias")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay, cfg.no_decay_norm_and_bias)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    warmup = max(0, min(cfg.warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        progress = min(max(progress, 0.0), 1.0)
        if cfg.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
