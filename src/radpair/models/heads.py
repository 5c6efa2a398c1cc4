"""Small heads shared by methods."""

from __future__ import annotations

from torch import nn


def projection_head(in_dim: int, out_dim: int, hidden_dim: int | None = None) -> nn.Sequential:
    """ConVIRT's non-linear projection: Linear -> ReLU -> Linear."""
    hidden_dim = hidden_dim or in_dim
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
