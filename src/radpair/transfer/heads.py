"""Downstream heads, the task loss, and the start encoders of transfer arms."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radpair.errors import DataError


class TimnetHead(nn.Module):
    """TIMNet's downstream "shallow CNN" head on a feature map (Wang et al.): a 1x1
    convolution with BatchNorm and ReLU, global average pooling, an FC layer of 512 units
    with ReLU, and the output layer. The paper gives no width for the 1x1 convolution;
    ``channels`` (default 256) is ours."""

    def __init__(self, in_channels: int, n_outputs: int, channels: int = 256, hidden: int = 512) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, hidden)
        self.out = nn.Linear(hidden, n_outputs)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(fmap))).mean(dim=(2, 3))
        return self.out(F.relu(self.fc(x)))


def init_module(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise ``module``'s parameters from ``generator`` (never the global RNG), with
    PyTorch's default schemes, so a head's start is a pure function of the cell's seed."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(m.weight, a=5**0.5, generator=generator)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1.0 / fan_in**0.5
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)


def task_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, categorical: bool) -> torch.Tensor:
    """Cross-entropy over usable rows (categorical) or masked binary cross-entropy."""
    if categorical:
        m = mask.bool()
        if not m.any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits[m].float(), targets[m].long())
    w = mask.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return (bce * w).sum() / w.sum().clamp_min(1.0)


def to_probs(logits: torch.Tensor, categorical: bool) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1) if categorical else torch.sigmoid(logits.float())


def torch_generator(*seeds: int) -> torch.Generator:
    """A CPU generator seeded from a tuple (a cell's seed, repeat, grid index, ...)."""
    state = np.random.SeedSequence([int(s) for s in seeds]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def build_start_encoder(weights: str | None, arch: str, seed: int) -> nn.Module:
    """The encoder an arm starts from: an exported safetensors file, or ``arch`` at random
    initialisation drawn from ``seed`` without touching the caller's global RNG state."""
    if weights is not None:
        from radpair.models.export import load_image_encoder

        if not Path(weights).is_file():
            raise DataError(f"encoder weights {weights!r} do not exist")
        with torch.random.fork_rng(devices=[]):  # building the module draws an init we then overwrite
            return load_image_encoder(weights)
    from radpair.models.image_encoders import IMAGE_ENCODERS

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return IMAGE_ENCODERS.build(arch)


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.train(mode)


__all__ = ["TimnetHead", "build_start_encoder", "eval_mode", "init_module", "task_loss", "to_probs", "torch_generator"]
