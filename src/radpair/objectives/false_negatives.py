"""False negatives in contrastive and ranking losses: which off-diagonal pairs are not negatives.

In-batch negatives assume every other row's report describes a different image. Chest
X-ray corpora break that: PA and lateral views of one study share a report, a patient's
studies resemble each other, normal reports repeat verbatim ("no acute cardiopulmonary
process"), and rows with the same label vector may be interchangeable for the task.
Pushing such pairs apart teaches the encoder to separate what should match.

:func:`false_negative_mask` marks those pairs from per-row integer codes;
:func:`masked_info_nce` is ConVIRT's bidirectional InfoNCE that either removes them from
the denominators (``mode="mask"``, logits set to −inf) or counts them as partial
positives (``mode="soften"``, soft targets). For the ranking loss, pick the impostor's
column of the mask (:func:`impostor_false_negatives`) and pass it to
:func:`radpair.objectives.ranking.ranking_loss`.

Columns are the global batch (every process's rows in rank order), like
:mod:`.contrastive`: codes are gathered across processes (no gradients needed) and
process ``r``'s own pair for local row ``i`` is global column ``r·B + i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F

from radpair.errors import unknown_choice_message
from radpair.objectives.contrastive import ContrastiveLoss, _world, gather_with_grad, pair_logits

CODE_KINDS = ("study", "patient", "report", "labels")
MODES = ("mask", "soften")


@dataclass
class RowCodes:
    """Per-row identity codes of this process's batch (integer tensors, any may be None).

    ``study``, ``patient`` and ``report`` (normalised report text) are [B] integer codes;
    equal codes mean the same study / patient / text. Codes must be consistent across
    processes (e.g. dataset-wide indices), since they are compared after gathering.
    ``labels`` is a [B, K] label vector (or [B] for a single label); two rows match when
    every entry is equal, NaN (unknown) matching NaN.
    """

    study: torch.Tensor | None = None
    patient: torch.Tensor | None = None
    report: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def get(self, kind: str) -> torch.Tensor | None:
        return getattr(self, kind)


def gather_codes(codes: torch.Tensor) -> torch.Tensor:
    """Concatenate an integer/bool/float code tensor from all processes along dim 0 (no grad).

    Why: masks and pair builders compare local rows against the global batch, so every
    process needs every row's codes; codes carry no gradient, so a plain gather suffices.
    """
    _, world = _world()
    if world == 1:
        return codes
    with torch.no_grad():
        if codes.dtype == torch.bool:
            return gather_with_grad(codes.to(torch.uint8)).bool()
        return gather_with_grad(codes.detach())


def _same(local: torch.Tensor, full: torch.Tensor, kind: str) -> torch.Tensor:
    if kind != "labels":
        if local.dim() != 1:
            raise ValueError(f"{kind} codes must be [B], got shape {tuple(local.shape)}")
        return local[:, None] == full[None, :]
    if local.dim() == 1:
        local, full = local[:, None], full[:, None]
    if local.dim() != 2:
        raise ValueError(f"labels must be [B] or [B, K], got shape {tuple(local.shape)}")
    eq = local[:, None, :] == full[None, :, :]
    if local.is_floating_point():
        eq = eq | (torch.isnan(local)[:, None, :] & torch.isnan(full)[None, :, :])
    return eq.all(-1)


def false_negative_mask(codes: RowCodes, use: Iterable[str]) -> torch.Tensor:
    """Boolean [B, B_global]: True where an off-diagonal pair shares any code named in ``use``.

    ``use`` is a subset of ``("study", "patient", "report", "labels")``; each named code
    must be present in ``codes``. The diagonal (each row's own pair, global column
    ``rank·B + i``) is always False: it is the positive, not a false negative. With an
    empty ``use`` nothing is masked.
    """
    use = list(use)
    for kind in use:
        if kind not in CODE_KINDS:
            raise ValueError(unknown_choice_message("false-negative code", kind, CODE_KINDS))
        if codes.get(kind) is None:
            raise ValueError(f"false-negative masking uses {kind!r} codes, but none were given for this batch")
    present = [codes.get(k) for k in CODE_KINDS if codes.get(k) is not None]
    if not present:
        raise ValueError("false_negative_mask needs at least one code tensor to know the batch size")
    n = present[0].shape[0]
    for kind in CODE_KINDS:
        t = codes.get(kind)
        if t is not None and t.shape[0] != n:
            raise ValueError(f"{kind} codes have {t.shape[0]} rows but the batch has {n}")
    rank, world = _world()
    device = present[0].device
    mask = torch.zeros(n, n * world, dtype=torch.bool, device=device)
    for kind in use:
        local = codes.get(kind)
        assert local is not None
        mask |= _same(local, gather_codes(local), kind).to(device)
    rows = torch.arange(n, device=device)
    mask[rows, rows + rank * n] = False
    return mask


def impostor_false_negatives(mask: torch.Tensor, impostor: torch.Tensor) -> torch.Tensor:
    """[B] bool: whether row j's impostor s(j) (a global index) is a false negative.

    The ranking loss has one negative per row, so it needs one entry of each mask row.
    """
    if impostor.shape != (mask.shape[0],):
        raise ValueError(f"impostor must be [{mask.shape[0]}] global indices, got shape {tuple(impostor.shape)}")
    rows = torch.arange(mask.shape[0], device=mask.device)
    return mask[rows, impostor.to(mask.device).long()]


def _direction(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None, mode: str,
               soft_weight: float) -> torch.Tensor:
    if mask is None or not bool(mask.any()):
        return F.cross_entropy(logits, targets)
    if mode == "mask":
        return F.cross_entropy(logits.masked_fill(mask, float("-inf")), targets)
    soft = mask.to(logits.dtype) * soft_weight
    soft[torch.arange(len(targets), device=logits.device), targets] = 1.0
    soft = soft / soft.sum(-1, keepdim=True)
    return -(soft * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def masked_info_nce(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    temperature: float | torch.Tensor = 0.1,
    lambda_image_to_text: float = 0.75,
    false_negatives: torch.Tensor | None = None,
    mode: str = "mask",
    soft_weight: float = 0.5,
) -> ContrastiveLoss:
    """ConVIRT's bidirectional InfoNCE with false negatives removed or softened.

    Same inputs, normalisation, gathering and λ semantics as
    :func:`radpair.objectives.contrastive.bidirectional_info_nce` (λ weighs image→text),
    which it equals when ``false_negatives`` is None or all False. ``false_negatives`` is a
    [B, B_global] bool matrix from :func:`false_negative_mask`; "shares a code" is
    symmetric, so the same matrix serves both directions.

    * ``mode="mask"``: flagged logits become −inf, so those columns leave the softmax
      denominator and receive no gradient (false-negative elimination).
    * ``mode="soften"``: flagged columns become partial positives: the target distribution
      puts weight 1 on the true pair and ``soft_weight`` on each flagged column, then is
      normalised (false-negative attraction; ``soft_weight=0`` equals plain InfoNCE).

    The returned ``logits`` are the unmasked image→text logits, for logging.
    """
    if mode not in MODES:
        raise ValueError(unknown_choice_message("false-negative mode", mode, MODES))
    if not 0.0 <= soft_weight <= 1.0:
        raise ValueError(f"soft_weight must lie in [0, 1], got {soft_weight}")
    logits_i2t, logits_t2i, targets = pair_logits(image_emb, text_emb, temperature)
    n = logits_i2t.shape[0]
    if false_negatives is not None and false_negatives.shape != logits_i2t.shape:
        raise ValueError(f"false_negatives must be [{n}, {logits_i2t.shape[1]}] (local rows x global batch), "
                         f"got {tuple(false_negatives.shape)}")
    if false_negatives is not None:
        false_negatives = false_negatives.to(logits_i2t.device).bool().clone()
        false_negatives[torch.arange(n, device=logits_i2t.device), targets] = False
    i2t = _direction(logits_i2t, targets, false_negatives, mode, soft_weight)
    t2i = _direction(logits_t2i, targets, false_negatives, mode, soft_weight)
    loss = lambda_image_to_text * i2t + (1.0 - lambda_image_to_text) * t2i
    return ContrastiveLoss(loss, i2t, t2i, logits_i2t)
