"""Bidirectional InfoNCE (ConVIRT) with negatives gathered from every process.

With data parallelism each process sees only its own batch; contrasting against the
embeddings of all processes keeps the effective number of negatives equal to the global
batch. Gathering must be autograd-aware: plain ``dist.all_gather`` returns tensors with no
gradient path, which silently drops the gradient of every remote negative. We use the
functional collective ``all_gather_single`` (its backward is a reduce-scatter of the
gradients), which torch recommends in place of the deprecated
``torch.distributed.nn.functional.all_gather``; the latter remains the fallback for torch
builds without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ContrastiveLoss:
    loss: torch.Tensor
    image_to_text: torch.Tensor
    text_to_image: torch.Tensor
    logits: torch.Tensor  # local rows x global columns, already divided by temperature


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all processes along dim 0, keeping gradients to every copy."""
    _, world = _world()
    if world == 1:
        return x
    import torch.distributed as dist

    try:
        from torch.distributed._functional_collectives import all_gather_single, wait_tensor
    except ImportError:  # older torch
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x.contiguous()), dim=0)
    return wait_tensor(all_gather_single(x.contiguous(), 0, dist.group.WORLD))


def pair_logits(
    image_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine logits of this process's rows against every process's columns, both ways, and
    the column of each row's own pair: what every InfoNCE variant starts from."""
    image_emb = F.normalize(image_emb.float(), dim=-1)
    text_emb = F.normalize(text_emb.float(), dim=-1)
    rank, _ = _world()
    all_text = gather_with_grad(text_emb)
    all_image = gather_with_grad(image_emb)
    n = image_emb.shape[0]
    targets = torch.arange(n, device=image_emb.device) + rank * n
    return image_emb @ all_text.t() / temperature, text_emb @ all_image.t() / temperature, targets


def bidirectional_info_nce(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    temperature: float | torch.Tensor = 0.1,
    lambda_image_to_text: float = 0.75,
) -> ContrastiveLoss:
    """ConVIRT's loss: λ·ℓ(image→text) + (1−λ)·ℓ(text→image), averaged over the batch.

    Embeddings are L2-normalised here, so callers pass raw projections. Row ``i`` of each
    input must be a matching pair. Each process computes the loss for its own rows
    against all gathered columns; averaging gradients across processes (DDP) then gives
    exactly the single-process loss of the global batch.
    """
    logits_i2t, logits_t2i, targets = pair_logits(image_emb, text_emb, temperature)
    i2t = F.cross_entropy(logits_i2t, targets)
    t2i = F.cross_entropy(logits_t2i, targets)
    loss = lambda_image_to_text * i2t + (1.0 - lambda_image_to_text) * t2i
    return ContrastiveLoss(loss, i2t, t2i, logits_i2t)
