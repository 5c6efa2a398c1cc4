"""TIMNet (text-image matching): balanced true/false pairs, match features, loss, metrics.

TIMNet trains a shallow classifier on |v_t − v_i| to tell whether an image and a report
belong to the same imaging event. The paper balances true and false pairs; we build them
inside each batch so no extra rows are encoded: every row contributes its true pair
(i, i) and one false pair (i, p(i)), i.e. exactly half of the 2B pairs are true and every
image and every text appears once in each.

A false pair must really be false. Chest X-ray reports repeat verbatim and PA/lateral
views share one, so p(i) is drawn among rows whose *normalised report code* differs from
row i's (otherwise the label "false" would be wrong for an identical text). p is a
random permutation under that constraint when one exists (no code holds more than half
the batch); otherwise each row draws independently among its valid partners (still one
false pair per row, texts may then repeat). A row with no valid partner at all (every row
of the batch shares its text) raises ValueError - no fallback can make that pair false.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from radpair.objectives.contrastive import _world, gather_with_grad
from radpair.objectives.ranking import _as_codes, constrained_permutation

_STREAM_TAG = 0x71AE7  # 'TIMNet' false pairs


@dataclass
class MatchingPairs:
    """Pairs over the global batch (indices into every process's rows in rank order)."""

    image_index: np.ndarray  # [2N] int64
    text_index: np.ndarray  # [2N] int64
    target: np.ndarray  # [2N] int64, 1 = true pair, 0 = false pair

    def __len__(self) -> int:
        return len(self.target)


@dataclass
class MatchingLoss:
    loss: torch.Tensor
    logits: torch.Tensor  # classifier output for this process's pairs
    target: torch.Tensor  # [P] 1 = true pair
    features: torch.Tensor  # [P, D] |v_t − v_i|


@dataclass(frozen=True)
class MatchingMetrics:
    accuracy: float
    auc: float  # NaN when the held-out pairs hold only one class
    f1: float
    precision: float
    recall: float
    average_precision: float  # NaN when there is no true pair
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def matching_pairs(
    report_codes: Sequence | np.ndarray,
    seed: int,
    epoch: int,
    batch_index: int = 0,
) -> MatchingPairs:
    """Balanced true/false pairs for one (global) batch, a pure function of its arguments.

    ``report_codes`` gives one hashable normalised-report code per row of the global
    batch. The draw uses a numpy Generator seeded with [seed, epoch, batch_index] (never
    the global RNG), so exact resume reproduces the same pairs. Pairs are ordered as all
    true pairs (i, i) then all false pairs (i, p(i)); see the module docstring for how p
    is drawn and when a ValueError is raised.
    """
    n = len(report_codes)
    codes = _as_codes(report_codes, n, "report_codes")
    if n == 0:
        raise ValueError("matching_pairs needs a non-empty batch")
    if min(seed, epoch, batch_index) < 0:
        raise ValueError(f"seed, epoch and batch_index must be >= 0 (they seed a numpy Generator), "
                         f"got {seed}, {epoch}, {batch_index}")
    # the tag keeps these draws apart from other (seed, epoch) streams, such as the ranking
    # loss's impostor permutation: numpy treats [s, e] and [s, e, 0] as the same seed
    rng = np.random.default_rng([int(seed), int(epoch), int(batch_index), _STREAM_TAG])
    counts = np.bincount(codes)
    lonely = np.flatnonzero(counts[codes] == n)
    if len(lonely):
        raise ValueError(f"no false partner for row {int(lonely[0])}: all {n} rows of this batch share its report text, "
                         "so any pair drawn from the batch would be a true match; sample batches with distinct reports")
    if 2 * int(counts.max()) <= n:
        partner = constrained_permutation(rng, codes)
    else:
        partner = np.empty(n, dtype=np.int64)
        u = rng.random(n)
        for code in np.unique(codes):
            rows = np.flatnonzero(codes == code)
            others = np.flatnonzero(codes != code)
            partner[rows] = others[np.floor(u[rows] * len(others)).astype(np.int64)]
    rows = np.arange(n, dtype=np.int64)
    return MatchingPairs(
        image_index=np.concatenate([rows, rows]),
        text_index=np.concatenate([rows, partner.astype(np.int64)]),
        target=np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)]),
    )


def match_features(text_emb: torch.Tensor, image_emb: torch.Tensor) -> torch.Tensor:
    """|v_t − v_i|, TIMNet's input to the match classifier (its Eq. 3).

    The absolute difference is symmetric and discards where the two vectors sit, so the
    classifier can only judge agreement - that is what forces the encoders to align.
    """
    if text_emb.shape != image_emb.shape:
        raise ValueError(f"text_emb {tuple(text_emb.shape)} and image_emb {tuple(image_emb.shape)} must match")
    return (text_emb.float() - image_emb.float()).abs()


def matching_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    pairs: MatchingPairs,
    classifier: Callable[[torch.Tensor], torch.Tensor],
) -> MatchingLoss:
    """Cross-entropy of the match classifier on this process's share of ``pairs``.

    ``image_emb``/``text_emb`` are this process's [B, D] embeddings; ``pairs`` index the
    global batch (from :func:`matching_pairs` on the gathered report codes). Each process
    scores the pairs whose image is one of its rows, with texts gathered from every
    process (with gradients), so every process holds exactly 2B pairs and the average of
    the per-process losses (DDP) is the loss of the global batch. ``classifier`` maps
    [P, D] features to [P, 2] logits (softmax cross-entropy, class 1 = true pair) or to
    [P] / [P, 1] logits (binary cross-entropy).
    """
    rank, _ = _world()
    n = image_emb.shape[0]
    all_text = gather_with_grad(text_emb.float())
    total = all_text.shape[0]
    if pairs.image_index.max(initial=-1) >= total or pairs.text_index.max(initial=-1) >= total:
        raise ValueError(f"pairs index rows beyond the global batch of {total}; build them for this batch")
    lo, hi = rank * n, (rank + 1) * n
    keep = np.flatnonzero((pairs.image_index >= lo) & (pairs.image_index < hi))
    device = image_emb.device
    img_idx = torch.as_tensor(pairs.image_index[keep] - lo, device=device)
    txt_idx = torch.as_tensor(pairs.text_index[keep], device=device)
    target = torch.as_tensor(pairs.target[keep], device=device)
    features = match_features(all_text[txt_idx], image_emb.float()[img_idx])
    logits = classifier(features)
    if logits.dim() == 2 and logits.shape[1] == 2:
        loss = F.cross_entropy(logits.float(), target)
    elif logits.dim() == 1 or (logits.dim() == 2 and logits.shape[1] == 1):
        loss = F.binary_cross_entropy_with_logits(logits.float().reshape(-1), target.float())
    else:
        raise ValueError(f"the match classifier must return [P, 2] or [P] logits, got {tuple(logits.shape)}")
    return MatchingLoss(loss, logits, target, features)


def matching_metrics(target: Sequence | np.ndarray, score: Sequence | np.ndarray, threshold: float = 0.5) -> MatchingMetrics:
    """TIMNet's Table I metrics on held-out pairs: accuracy, AUC, F1, precision, recall, AP.

    ``score`` is the predicted probability of a true pair; thresholded metrics use
    ``score >= threshold``. Scikit-learn computes them so the numbers match what readers
    would compute; undefined ranking metrics (one class only) are NaN rather than an
    error, and precision/F1 with no predicted positive are 0.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(target).astype(int).reshape(-1)
    s = np.asarray(score, dtype=float).reshape(-1)
    if y.shape != s.shape or y.size == 0:
        raise ValueError(f"target and score must be non-empty and of equal length, got {y.size} and {s.size}")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"target must be 0/1 (false/true pair), got values {sorted(set(np.unique(y).tolist()))}")
    pred = (s >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return MatchingMetrics(
        accuracy=float(accuracy_score(y, pred)),
        auc=float(roc_auc_score(y, s)) if both else float("nan"),
        f1=float(f1_score(y, pred, zero_division=0)),
        precision=float(precision_score(y, pred, zero_division=0)),
        recall=float(recall_score(y, pred, zero_division=0)),
        average_precision=float(average_precision_score(y, s)) if y.any() else float("nan"),
        n=int(y.size),
    )
