"""Captioning losses: next-token cross-entropy of a report, read forward or backward.

A report batch arrives as ``[BOS] w1 .. wn [EOS] pad ..`` rows of different lengths. The
backward direction of bidirectional captioning (VirTex, RadTex) reads each row's *real*
tokens in reverse, ``[EOS] wn .. w1 [BOS]``, with the padding left where it is, so one
causal decoder code path serves both directions and padding never enters a loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def reverse_tokens(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse each row's unpadded prefix (``mask`` 1 on real tokens, which come first);
    padding stays at the end, so the result has the same mask."""
    lengths = mask.long().sum(dim=1, keepdim=True)  # [B, 1]
    pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)  # [1, T]
    src = torch.where(pos < lengths, lengths - 1 - pos, pos)
    return ids.gather(1, src)


class TeacherForced(NamedTuple):
    """Decoder inputs and next-token targets of a token batch: ``inputs`` = ids[:, :-1],
    ``targets`` = ids[:, 1:] with padding set to ``ignore_index``, ``input_mask`` the mask of
    the inputs."""

    inputs: torch.Tensor
    targets: torch.Tensor
    input_mask: torch.Tensor


def teacher_forced(ids: torch.Tensor, mask: torch.Tensor, ignore_index: int = -100) -> TeacherForced:
    inputs = ids[:, :-1]
    targets = ids[:, 1:].masked_fill(~mask[:, 1:].bool(), ignore_index)
    return TeacherForced(inputs, targets, mask[:, :-1])


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                    label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the real target tokens of the *global* batch ([B, T, V]
    logits, [B, T] targets).

    Each process divides its token sum by the all-reduced token count over the world size,
    so the loop's average of the processes' gradients is the gradient of the global token
    mean: processes holding short reports do not weigh more. On one process this is the
    plain token mean. No real target anywhere gives 0 with a gradient, never NaN."""
    flat = targets.reshape(-1)
    real = flat != ignore_index
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=ignore_index,
                            label_smoothing=label_smoothing, reduction="sum")
    count = real.sum().float().reshape(1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if world > 1:
            torch.distributed.all_reduce(count)
            count = count / world
    return total / count.clamp_min(1.0).squeeze(0)
