"""Chauhan et al. (2020) joint-embedding ranking loss, its direct variants and classifier loss.

Eq. (1) of the paper pulls a matched image-text pair (I_j, R_j) together relative to an
impostor pair built from a random permutation s drawn at the start of every epoch::

    J_E = max(0, η − Sim(I_j, R_j) + Sim(I_j, R_s(j))) + max(0, η − Sim(I_j, R_j) + Sim(I_s(j), R_j))

with margin η = |y_j − y_s(j)| when both pairs carry an ordinal label and a constant (0.5)
otherwise. The paper argues that directly minimising the distance of matched pairs can
collapse the embeddings into a small cluster; the ranking form spreads them out. Its
Table 1 compares the ranking loss against that direct minimisation, so both are here.

Design choices (each a stated deviation or a place the paper is silent):

* **Mean, not sum.** Eq. (3) sums J_E over pairs; we average over the batch, which only
  rescales the gradient (the paper's batch is 4). :func:`labelled_cross_entropy` divides
  by the same row count by default, so the J_E : J_C ratio of Eq. (3) is preserved.
* **Where impostors come from.** :func:`ranking_loss` takes impostors from the global
  batch (gathered across processes with gradients, like :mod:`.contrastive`), so no
  extra rows are encoded. :func:`ranking_hinge` accepts impostor embeddings directly for
  callers that load the dataset-level impostor rows s(j) as extra rows.
* **l2 similarity** is −‖I − R‖ (the paper calls it "the reciprocal of euclidean
  distance" but writes the negative), so "closer" means the same for all three.
* **Impostor permutation.** :func:`impostor_permutation` is a pure function of
  (seed, epoch, n) so exact resume holds. The paper allows fixed points (s(j) = j gives a
  zero-gradient, constant-η term) and same-study impostors (PA and lateral views share a
  report, so the "impostor" report is the true one); ``avoid_same_study=True`` (off by
  default) removes both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from radpair.errors import unknown_choice_message
from radpair.objectives.contrastive import _world, gather_with_grad
from radpair.objectives.false_negatives import gather_codes

SIMILARITIES = ("dot", "cosine", "l2")
NORMALIZATIONS = ("batch", "labelled")


@dataclass
class RankingLoss:
    loss: torch.Tensor  # scalar, mean over the local rows
    impostor_text_term: torch.Tensor  # [B] max(0, η − Sim(I_j,R_j) + Sim(I_j,R_s(j)))
    impostor_image_term: torch.Tensor  # [B] max(0, η − Sim(I_j,R_j) + Sim(I_s(j),R_j))
    margin: torch.Tensor  # [B] η per row
    positive_similarity: torch.Tensor  # [B] Sim(I_j, R_j)


@dataclass
class DirectLoss:
    loss: torch.Tensor  # scalar, mean over rows of −Sim(I_j, R_j)
    positive_similarity: torch.Tensor  # [B]


@dataclass
class ClassifierLoss:
    loss: torch.Tensor  # image + text cross-entropy, normalised as requested
    image: torch.Tensor  # image-classifier part
    text: torch.Tensor  # text-classifier part
    n_labelled: int  # labelled rows in this process's batch


def _check_similarity(similarity: str) -> None:
    if similarity not in SIMILARITIES:
        raise ValueError(unknown_choice_message("similarity", similarity, SIMILARITIES))


def pair_similarity(a: torch.Tensor, b: torch.Tensor, similarity: str = "dot") -> torch.Tensor:
    """Row-wise Sim(a_j, b_j) for the paper's three measures, shape [B].

    Row-wise rather than a full B×B matrix: Eq. (1) only ever compares a row with its
    partner and its impostor, so the loss stays O(B·D) and loop-free.
    """
    _check_similarity(similarity)
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"pair_similarity needs two [B, D] tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.float(), b.float()
    if similarity == "dot":
        return (a * b).sum(-1)
    if similarity == "cosine":
        return F.cosine_similarity(a, b, dim=-1, eps=1e-8)
    return -torch.linalg.vector_norm(a - b, dim=-1)


def _labelled_mask(labels: torch.Tensor | None, labelled: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    if labels is None:
        if labelled is not None and bool(labelled.any()):
            raise ValueError("labelled marks rows as labelled but no labels were given")
        return torch.zeros(n, dtype=torch.bool, device=device)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape [{n}] (one ordinal label per row), got {tuple(labels.shape)}")
    if labelled is None:
        return labels >= 0
    if labelled.shape != (n,):
        raise ValueError(f"labelled must have shape [{n}], got {tuple(labelled.shape)}")
    return labelled.bool()


def ranking_margin(
    labels: torch.Tensor | None,
    labelled: torch.Tensor | None,
    impostor_labels: torch.Tensor | None,
    impostor_labelled: torch.Tensor | None,
    default_margin: float = 0.5,
) -> torch.Tensor:
    """η_j = |y_j − y_s(j)| where both pairs are labelled, else ``default_margin`` (Eq. 1).

    The label difference makes the margin grow with how wrong the impostor is on the
    ordinal severity scale; unlabelled pairs fall back to a constant. ``labelled=None``
    treats negative labels as "no label" (e.g. −1). Note that two labelled pairs of the
    same grade get η = 0, exactly as in the paper.
    """
    ref = labels if labels is not None else impostor_labels
    if ref is None:
        raise ValueError("ranking_margin needs labels or impostor_labels to know the batch size; "
                         "with no labels at all every margin is default_margin")
    n = ref.shape[0]
    mine = _labelled_mask(labels, labelled, n, ref.device)
    theirs = _labelled_mask(impostor_labels, impostor_labelled, n, ref.device)
    both = mine & theirs
    default = torch.full((n,), float(default_margin), device=ref.device)
    if labels is None or impostor_labels is None:
        return default
    diff = (labels.float() - impostor_labels.float()).abs()
    return torch.where(both, diff, default)


def ranking_hinge(
    image: torch.Tensor,
    text: torch.Tensor,
    impostor_image: torch.Tensor,
    impostor_text: torch.Tensor,
    margin: torch.Tensor | float = 0.5,
    similarity: str = "dot",
    weight: torch.Tensor | None = None,
) -> RankingLoss:
    """Eq. (1) for row-aligned impostors: ``impostor_*[j]`` are the embeddings of row s(j).

    This is the core shared by :func:`ranking_loss` (in-batch impostors) and callers that
    encode the dataset-level impostor rows themselves. ``weight`` ([B], in [0, 1])
    multiplies both hinge terms of a row: 0 removes a known false negative (an impostor
    sharing the study, report, ...), values in between soften it. The loss is the mean
    over all rows, masked rows included as zeros, so the scale does not depend on how many
    rows were masked and the multi-process average equals the global mean.
    """
    for name, t in (("text", text), ("impostor_image", impostor_image), ("impostor_text", impostor_text)):
        if t.shape != image.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but image has {tuple(image.shape)}; "
                             "ranking_hinge needs row-aligned [B, D] embeddings")
    positive = pair_similarity(image, text, similarity)
    n = image.shape[0]
    if not torch.is_tensor(margin):
        margin = torch.full((n,), float(margin), device=image.device)
    if margin.shape != (n,):
        raise ValueError(f"margin must be a float or have shape [{n}], got {tuple(margin.shape)}")
    margin = margin.to(positive)
    text_term = F.relu(margin - positive + pair_similarity(image, impostor_text, similarity))
    image_term = F.relu(margin - positive + pair_similarity(impostor_image, text, similarity))
    if weight is not None:
        if weight.shape != (n,):
            raise ValueError(f"weight must have shape [{n}], got {tuple(weight.shape)}")
        w = weight.to(positive)
        text_term, image_term = text_term * w, image_term * w
    loss = (text_term + image_term).mean()
    return RankingLoss(loss, text_term, image_term, margin, positive)


def ranking_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    impostor: torch.Tensor,
    labels: torch.Tensor | None = None,
    labelled: torch.Tensor | None = None,
    similarity: str = "dot",
    default_margin: float = 0.5,
    false_negative: torch.Tensor | None = None,
    false_negative_weight: float = 0.0,
) -> RankingLoss:
    """Chauhan et al. Eq. (1), vectorised, with impostors taken from the global batch.

    ``image``/``text`` are this process's [B, D] embeddings (row j is a matched pair).
    ``impostor`` ([B], long) holds s(j) as an index into the *global* batch, i.e. the
    concatenation of every process's rows in rank order (rank r's rows start at r·B);
    with one process it is just a permutation of range(B), e.g. from
    :func:`impostor_permutation`. Embeddings, labels and the labelled mask are gathered
    across processes (embeddings with gradients), so averaging the per-process losses
    and gradients (DDP) reproduces the single-process loss of the global batch.

    ``labels`` are ordinal grades; ``labelled`` marks which rows carry one (default:
    ``labels >= 0``). ``false_negative`` ([B], bool) flags rows whose impostor must not
    count as a negative (see :mod:`.false_negatives`); their hinge terms are multiplied
    by ``false_negative_weight`` (0 masks, between 0 and 1 softens).
    """
    _check_similarity(similarity)
    n = image.shape[0]
    if impostor.shape != (n,):
        raise ValueError(f"impostor must hold one global row index per local row, shape [{n}], got {tuple(impostor.shape)}")
    all_image = gather_with_grad(image.float())
    all_text = gather_with_grad(text.float())
    total = all_image.shape[0]
    impostor = impostor.to(device=image.device, dtype=torch.long)
    if n and (int(impostor.min()) < 0 or int(impostor.max()) >= total):
        raise ValueError(f"impostor indices must lie in [0, {total}) (the global batch), got "
                         f"[{int(impostor.min())}, {int(impostor.max())}]")
    margin: torch.Tensor | float = float(default_margin)
    if labels is not None:
        mine = _labelled_mask(labels, labelled, n, image.device)
        all_labels = gather_codes(labels.to(image.device))
        all_labelled = gather_codes(mine)
        margin = ranking_margin(labels, mine, all_labels[impostor], all_labelled[impostor], default_margin)
    elif labelled is not None and bool(labelled.any()):
        raise ValueError("labelled marks rows as labelled but no labels were given")
    weight = None
    if false_negative is not None:
        if false_negative.shape != (n,):
            raise ValueError(f"false_negative must have shape [{n}], got {tuple(false_negative.shape)}")
        if not 0.0 <= false_negative_weight <= 1.0:
            raise ValueError(f"false_negative_weight must lie in [0, 1] (0 masks), got {false_negative_weight}")
        weight = torch.where(false_negative.to(image.device).bool(), float(false_negative_weight), 1.0)
    return ranking_hinge(image, text, all_image[impostor], all_text[impostor], margin, similarity, weight)


def direct_similarity_loss(image: torch.Tensor, text: torch.Tensor, similarity: str = "dot") -> DirectLoss:
    """The paper's "direct minimisation" baselines (Table 1 rows dot, l2, cosine).

    −Sim(I_j, R_j) for dot and cosine and ‖I_j − R_j‖ for l2 (= −Sim with Sim = −‖·‖),
    averaged over the batch, with no impostor. They exist to show what the ranking form
    buys: the dot variant is unbounded below and the others can collapse the embeddings.
    Needs no cross-process gather: each row only sees itself.
    """
    if text.shape != image.shape:
        raise ValueError(f"text has shape {tuple(text.shape)} but image has {tuple(image.shape)}")
    positive = pair_similarity(image, text, similarity)
    return DirectLoss(-positive.mean(), positive)


def labelled_cross_entropy(
    image_logits: torch.Tensor,
    text_logits: torch.Tensor,
    labels: torch.Tensor,
    labelled: torch.Tensor | None = None,
    normalize: str = "batch",
) -> ClassifierLoss:
    """Eq. (2): cross-entropy of the image and the text classifier on labelled rows only.

    Unlabelled rows carry no label and contribute nothing (not a guessed class).
    ``normalize="batch"`` divides the sum over labelled rows by the number of rows in the
    batch, matching :func:`ranking_loss`'s mean so that adding the two keeps Eq. (3)'s
    ratio (J_E summed over all pairs, J_C over labelled pairs); it is also exact under
    data parallelism. ``normalize="labelled"`` divides by the global number of labelled
    rows (all-reduced, and scaled by the world size so that the process average is the
    global mean). A batch without labelled rows gives a zero loss that still depends on
    the logits, so every process runs the same backward (DDP needs that).
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(unknown_choice_message("normalize", normalize, NORMALIZATIONS))
    n = image_logits.shape[0]
    if image_logits.dim() != 2 or text_logits.shape != image_logits.shape:
        raise ValueError(f"image_logits and text_logits must both be [B, K], got {tuple(image_logits.shape)} "
                         f"and {tuple(text_logits.shape)}")
    mine = _labelled_mask(labels, labelled, n, image_logits.device)
    safe = torch.where(mine, labels.to(image_logits.device).long(), torch.zeros_like(mine, dtype=torch.long))
    k = image_logits.shape[1]
    if bool(mine.any()) and int(safe[mine].max()) >= k:
        raise ValueError(f"a labelled row has class {int(safe[mine].max())} but the classifiers have {k} outputs")
    w = mine.to(image_logits.dtype if image_logits.is_floating_point() else torch.float32)
    ce_image = F.cross_entropy(image_logits.float(), safe, reduction="none") * w
    ce_text = F.cross_entropy(text_logits.float(), safe, reduction="none") * w
    if normalize == "batch":
        denom = torch.tensor(float(max(n, 1)))
        scale = 1.0
    else:
        _, world = _world()
        count = mine.sum().float().reshape(1)
        if world > 1:
            import torch.distributed as dist

            count = count.clone()
            dist.all_reduce(count)
        denom = count.clamp(min=1.0).squeeze(0)
        scale = float(world)
    denom = denom.to(ce_image.device)
    image_part = ce_image.sum() * scale / denom
    text_part = ce_text.sum() * scale / denom
    return ClassifierLoss(image_part + text_part, image_part, text_part, int(mine.sum()))


def _as_codes(codes: Sequence | np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.shape != (n,):
        raise ValueError(f"{what} must give one code per row, shape ({n},), got {arr.shape}")
    return np.unique(arr, return_inverse=True)[1].reshape(n)


def _shift_permutation(rng: np.random.Generator, codes: np.ndarray) -> np.ndarray:
    """A permutation with codes[perm[i]] != codes[i] for all i, or ValueError if none exists.

    Lay the rows out group by group (groups and members in random order) and send each
    position to the one ``m`` places later, ``m`` the largest group: two positions ``m``
    apart (cyclically) never fall in one contiguous group when every group has at most
    n/2 rows, which is also necessary (a group of g rows needs g partners outside it).
    """
    n = len(codes)
    counts = np.bincount(codes)
    m = int(counts.max())
    if 2 * m > n:
        worst = int(np.argmax(counts))
        raise ValueError(f"no impostor/partner assignment avoids same-code rows: code #{worst} holds {m} of {n} rows "
                         "(more than half), so some row must be paired within its own group")
    group_order = rng.permutation(len(counts))
    rank_of_group = np.empty_like(group_order)
    rank_of_group[group_order] = np.arange(len(counts))
    layout = np.lexsort((rng.random(n), rank_of_group[codes]))
    perm = np.empty(n, dtype=np.int64)
    perm[layout] = layout[(np.arange(n) + m) % n]
    return perm


def constrained_permutation(rng: np.random.Generator, codes: np.ndarray) -> np.ndarray:
    """A random permutation with ``codes[perm[i]] != codes[i]`` for every row i.

    Draw a uniform permutation, then repair each violating row by swapping targets with a
    randomly chosen row for which the swap is valid on both sides (the only rows touched
    are the two swapped, so one pass fixes every violation). If some row has no valid swap
    partner, fall back to a constructive layout (:func:`_shift_permutation`), which exists
    whenever no code holds more than half the rows and raises otherwise. Every draw comes
    from ``rng``, so the result is a pure function of the generator's state and ``codes``.
    """
    codes = np.asarray(codes)
    n = len(codes)
    perm = rng.permutation(n).astype(np.int64)
    for i in np.flatnonzero(codes[perm] == codes):
        if codes[perm[i]] != codes[i]:
            continue
        ok = (codes[perm] != codes[i]) & (codes != codes[perm[i]])
        candidates = np.flatnonzero(ok)
        if len(candidates) == 0:
            return _shift_permutation(rng, codes)
        j = candidates[rng.integers(len(candidates))]
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def impostor_permutation(
    seed: int,
    epoch: int,
    n: int,
    *,
    avoid_same_study: bool = False,
    study_codes: Sequence | np.ndarray | None = None,
    stream: int | None = None,
) -> np.ndarray:
    """The impostor map s of one epoch: a permutation of range(n), as an int64 array.

    A pure function of (seed, epoch, n) - a numpy Generator seeded with [seed, epoch],
    never the global RNG - so a resumed run draws the same impostors as an uninterrupted
    one, and every epoch gets a fresh map as in the paper.

    ``avoid_same_study=True`` is a stated deviation from the paper (off by default): no
    fixed points and no impostor from the same study (``study_codes``, one hashable code
    per row; without codes only fixed points are avoided). It stays deterministic in
    (seed, epoch, n, study_codes) and raises ValueError when impossible (a study holding
    more than half the rows). With the option off, ``study_codes`` is ignored.
    ``stream`` (an int) separates this draw from other (seed, epoch) streams, e.g. the
    training loop's own epoch shuffle, which also seeds a Generator with [seed, epoch].
    """
    if n < 0 or seed < 0 or epoch < 0:
        raise ValueError(f"seed, epoch and n must be >= 0 (they seed a numpy Generator), got {seed}, {epoch}, {n}")
    rng = np.random.default_rng([int(seed), int(epoch)] + ([] if stream is None else [int(stream)]))
    if not avoid_same_study:
        return rng.permutation(n).astype(np.int64)
    codes = np.arange(n) if study_codes is None else _as_codes(study_codes, n, "study_codes")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return constrained_permutation(rng, codes)
