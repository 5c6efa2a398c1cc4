"""TieNet's losses: Eq. (6)'s weighted multi-label BCE, the report loss L_R, and the
self-attention penalty of the attention-encoded text embedding.

Kept apart from the method so that the image-only baseline, the report-only classifier
and any later generative method weigh and normalise exactly the same way.

Normalisation is chosen so that one process and N processes give the same gradient
(the loop averages gradients over processes): the classification loss is a sum over
(row, class) entries divided by the number of entries of the *local* batch (every process
has the same local batch size), the report loss a sum over real target tokens divided by
the global token count (all-reduced), and batch-counted balance weights count over the
global batch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from radpair.errors import unknown_choice_message
from radpair.objectives.contrastive import _world

BETA_FORMS = ("tienet", "chestxray8")


class BalanceWeights(NamedTuple):
    """Per-class weights of Eq. (6): ``beta_pos``/``beta_neg`` (β_P, β_N) and ``lam`` (λ_m), each [C]."""

    beta_pos: torch.Tensor
    beta_neg: torch.Tensor
    lam: torch.Tensor


def balance_betas(n_pos, n_neg, form: str = "tienet"):
    """β_P and β_N from counts of positive (|P|) and negative (|N|) instances.

    ``tienet`` is Eq. (6) as printed in TieNet: β_P = |N|/(|P|+|N|), β_N = |P|/(|P|+|N|).
    ``chestxray8`` is the form of Wang et al. 2017 that TieNet cites: β_P = (|P|+|N|)/|P|,
    β_N = (|P|+|N|)/|N|. Both weigh a positive |N|/|P| times a negative; they differ by the
    factor (|P|+|N|)²/(|P||N|) >= 4, which moves the balance against L_R (so α). Never a
    division by zero: with the ``tienet`` form a class with no positive (|P| = 0) gets
    β_N = 0, so its negatives weigh nothing, exactly as the printed formula says; with
    ``chestxray8`` the side with no instance gets 0. Works on numpy arrays and tensors alike.
    """
    if form not in BETA_FORMS:
        raise ValueError(unknown_choice_message("beta form", form, BETA_FORMS))
    lib = torch if isinstance(n_pos, torch.Tensor) else np
    p, n = n_pos * 1.0, n_neg * 1.0
    total = p + n
    if form == "tienet":
        safe = lib.where(total > 0, total, 1.0)
        return n / safe, p / safe
    return (lib.where(p > 0, total / lib.where(p > 0, p, 1.0), 0.0),
            lib.where(n > 0, total / lib.where(n > 0, n, 1.0), 0.0))


def class_count_weights(class_counts, n_labelled: int, form: str = "tienet", balance: bool = True,
                        class_weights: bool = True) -> BalanceWeights:
    """Eq. (6)'s weights precomputed from the training rows' class counts.

    λ_m = (Q − Q_m)/Q with Q the labelled images and Q_m those positive for class m. The
    paper's |P| and |N| count images with at least one / with no disease; the loop's
    statistics carry per-class positives only, so here |P| and |N| are counted per class
    (P_m = Q_m, N_m = Q − Q_m): a stated deviation that balances each class on its own.
    ``balance``/``class_weights`` False set β or λ to 1 (ablations, plain BCE).
    """
    q = float(max(int(n_labelled), 0))
    pos = np.asarray(class_counts, dtype=np.float64)
    neg = np.clip(q - pos, 0.0, None)
    if balance:
        bp, bn = balance_betas(pos, neg, form)
    else:
        bp, bn = np.ones_like(pos), np.ones_like(pos)
    lam = (q - pos) / q if (class_weights and q > 0) else np.ones_like(pos)
    as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    return BalanceWeights(as_t(bp), as_t(bn), as_t(lam))


def batch_betas(targets: torch.Tensor, mask: torch.Tensor, form: str = "tienet") -> tuple[torch.Tensor, torch.Tensor]:
    """β_P, β_N with the paper's |P| (images with at least one disease) and |N| (images with
    none), counted over the labelled rows of the global batch, as Wang et al. 2017 count
    per batch. Scalars (0-d tensors)."""
    m = mask.bool()
    labelled = m.any(dim=1)
    positive = ((targets > 0.5) & m).any(dim=1)
    counts = torch.stack([(positive & labelled).sum(), (~positive & labelled).sum()]).float()
    _, world = _world()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(counts)
    return balance_betas(counts[0], counts[1], form)


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                 beta_pos: torch.Tensor | float = 1.0, beta_neg: torch.Tensor | float = 1.0,
                 lam: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Eq. (6) summed over classes: Σ_m λ_m [β_P Σ_{y=1} −ln f + β_N Σ_{y=0} −ln(1−f)].

    ``logits``/``targets``/``mask`` are [B, C]; weights broadcast against [C] (or scalars).
    Masked entries (unlabelled, uncertain) contribute nothing. The sum is divided by B·C,
    the entries of the local batch, so a loss over a batch without labels is zero with a
    gradient (every process then runs the same backward) and one process equals N.
    """
    if logits.shape != targets.shape or logits.shape != mask.shape or logits.dim() != 2:
        raise ValueError(f"logits, targets and mask must all be [B, C], got {tuple(logits.shape)}, "
                         f"{tuple(targets.shape)}, {tuple(mask.shape)}")
    z = logits.float()
    y = (targets.to(z.device).float() > 0.5).float()
    m = mask.to(z.device).float()
    as_w = lambda w: torch.as_tensor(w, dtype=torch.float32, device=z.device)  # noqa: E731
    w = m * as_w(lam) * (y * as_w(beta_pos) + (1.0 - y) * as_w(beta_neg))
    per = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    return (per * w).sum() / max(z.numel(), 1)


def attention_penalty(g: torch.Tensor) -> torch.Tensor:
    """‖G Gᵀ − I‖²_F of Lin et al. 2017, averaged over the batch ([B, r, T] → scalar).

    It pushes the r attention rows to look at different words (each row is a distribution,
    so GGᵀ = I means disjoint, one-hot rows)."""
    gram = g.float() @ g.float().transpose(1, 2)
    eye = torch.eye(g.shape[1], device=g.device, dtype=gram.dtype)
    return ((gram - eye) ** 2).sum(dim=(1, 2)).mean()


def report_loss(logits: torch.Tensor, targets: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """L_R: mean next-token cross-entropy over the real target tokens ([B, T, V], [B, T], [B, T]).

    Divided by the *global* number of real tokens (all-reduced, times the world size so
    that the loop's average over processes is the global mean). No real token gives 0
    with a gradient, never NaN."""
    m = step_mask.bool()
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1).long(),
                         reduction="none").reshape(targets.shape)
    total = (ce * m).sum()
    count = m.sum().float().reshape(1)
    _, world = _world()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(count)
        count = count / world
    return total / count.clamp_min(1.0).squeeze(0)


__all__ = ["BETA_FORMS", "BalanceWeights", "attention_penalty", "balance_betas", "batch_betas",
           "class_count_weights", "report_loss", "weighted_bce"]
