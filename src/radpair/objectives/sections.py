"""The ConVIRT report-section study (Han, Perkins and Shah): local and combined losses.

Modified ConVIRT encodes FINDINGS and IMPRESSION separately (shared text encoder and
projection), averages the two projections into the global text embedding, and adds a
local term that aligns the two sections with each other::

    L_local  = α·ℓ(fnd→imp) + (1−α)·ℓ(imp→fnd)          (their Eq. 1, cosine InfoNCE Eq. 2)
    L_global = λ_g·ℓ(image→text) + (1−λ_g)·ℓ(text→image)  (ConVIRT on the averaged text)
    L        = λ·L_local + (1−λ)·L_global

Both terms are :func:`~radpair.objectives.contrastive.bidirectional_info_nce`, whose
``lambda_image_to_text`` weighs its *first* argument's direction: passing (findings,
impression) with ``lambda_image_to_text=α`` is exactly L_local. Reusing it keeps the
cross-process gather (negatives from every process, with gradients) in one place. The
paper's settings: τ = 0.1 and every scalar (α, λ, λ_g) 0.75.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radpair.objectives.contrastive import ContrastiveLoss, bidirectional_info_nce


@dataclass
class SectionLoss:
    loss: torch.Tensor  # λ·L_local + (1−λ)·L_global
    local: ContrastiveLoss  # image_to_text = ℓ(fnd→imp), text_to_image = ℓ(imp→fnd)
    global_: ContrastiveLoss  # image ↔ averaged text
    text_emb: torch.Tensor  # the averaged text projection used by L_global


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def section_local_loss(
    findings_emb: torch.Tensor,
    impression_emb: torch.Tensor,
    temperature: float | torch.Tensor = 0.1,
    alpha: float = 0.75,
) -> ContrastiveLoss:
    """L_local = α·ℓ(fnd→imp) + (1−α)·ℓ(imp→fnd), the cosine InfoNCE of the two sections.

    Why a separate term: averaging the sections alone lets one dominate; aligning the two
    projections of the same report makes the model use both. ``image_to_text`` of the
    result holds ℓ(fnd→imp) and ``text_to_image`` ℓ(imp→fnd).
    """
    _check_unit("alpha", alpha)
    if findings_emb.shape != impression_emb.shape:
        raise ValueError(f"findings_emb {tuple(findings_emb.shape)} and impression_emb "
                         f"{tuple(impression_emb.shape)} must have the same [B, D] shape")
    return bidirectional_info_nce(findings_emb, impression_emb, temperature, lambda_image_to_text=alpha)


def section_study_loss(
    image_emb: torch.Tensor,
    findings_emb: torch.Tensor,
    impression_emb: torch.Tensor,
    temperature: float | torch.Tensor = 0.1,
    alpha: float = 0.75,
    lambda_local: float = 0.75,
    lambda_image_to_text: float = 0.75,
    text_emb: torch.Tensor | None = None,
) -> SectionLoss:
    """Modified ConVIRT's loss L = λ·L_local + (1−λ)·L_global.

    ``findings_emb``/``impression_emb`` are the raw projections of the two sections of each
    row's report (same encoder and projection). The global text embedding is their mean
    (the paper averages the projected representations; InfoNCE normalises afterwards)
    unless ``text_emb`` is given. ``lambda_local`` is λ (weight of L_local),
    ``lambda_image_to_text`` the image→text weight inside L_global, ``alpha`` the
    fnd→imp weight inside L_local. ``lambda_local=0`` is plain ConVIRT on the averaged text.
    """
    _check_unit("lambda_local", lambda_local)
    _check_unit("lambda_image_to_text", lambda_image_to_text)
    local = section_local_loss(findings_emb, impression_emb, temperature, alpha)
    if text_emb is None:
        text_emb = (findings_emb.float() + impression_emb.float()) / 2
    if text_emb.shape[0] != image_emb.shape[0]:
        raise ValueError(f"image_emb has {image_emb.shape[0]} rows but the text has {text_emb.shape[0]}")
    global_ = bidirectional_info_nce(image_emb, text_emb, temperature, lambda_image_to_text=lambda_image_to_text)
    loss = lambda_local * local.loss + (1.0 - lambda_local) * global_.loss
    return SectionLoss(loss, local, global_, text_emb)
