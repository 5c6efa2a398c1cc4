"""Few-label training subsets: "what if only N images had been labelled?"

Why a dedicated sampler:

* Reproducibility. Subset (N, repeat) is drawn from a generator seeded by
  ``(seed, N, repeat)``, so it does not change when other N values or more repeats are
  requested, and every encoder is probed on the *same* images (a paired comparison).
* Usable subsets. A random 10 images often lack any positive of a rare finding, making
  that class's probe a constant. The sampler starts from a plain random draw and then
  swaps in, for each class missing a positive (or a negative), one random image that has
  it, removing an image that no other requirement depends on. The draw stays as random as
  possible while each class gets at least one of each label value where the pool and N
  allow; classes for which that was impossible are reported, never hidden.

Subsets are drawn from the rows you pass (the training split): indices index into those
rows. Test images are never in the pool, so no patient can leak into the test set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence, Union

import numpy as np

from radpair.errors import DataError
from radpair.evaluation.metrics import LabelPolicy, MaskedLabels, apply_label_policy
from radpair.evaluation.stratify import stratify

ALL = "all"
NLabels = Union[int, Literal["all"]]


def parse_n_labels(n: Any) -> NLabels:
    """Validate one label budget: a positive int or the string ``"all"``."""
    if isinstance(n, str):
        if n.strip().lower() == ALL:
            return ALL
        try:
            n = int(n)
        except ValueError:
            raise DataError(f"label budget {n!r} must be a positive integer or 'all'") from None
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"label budget {n!r} must be a positive integer or 'all'")
    return int(n)


def n_labels_key(n: NLabels) -> str:
    """Stable text form of a budget for dict keys and tables ("10", "all")."""
    return ALL if n == ALL else str(int(n))


def n_labels_sort_key(n: NLabels) -> float:
    return float("inf") if n == ALL else float(n)


@dataclass(frozen=True)
class FewLabelSubset:
    """One drawn subset: row indices into the pool plus what the draw could guarantee."""

    n_requested: NLabels
    repeat: int
    seed: int
    indices: np.ndarray
    pool_size: int
    # classes that still lack a positive / a negative (pool or budget too small)
    lacking_positive: list[int] = field(default_factory=list)
    lacking_negative: list[int] = field(default_factory=list)

    @property
    def n_drawn(self) -> int:
        return int(self.indices.size)

    @property
    def is_whole_pool(self) -> bool:
        """True when the subset is the entire pool, so repeats would all be identical."""
        return self.n_drawn == self.pool_size


def _rng_for(seed: int, n: NLabels, repeat: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 0 if n == ALL else int(n), int(repeat)])


def draw_subset(
    labels: Any,
    n: NLabels,
    seed: int = 0,
    repeat: int = 0,
    policy: LabelPolicy = LabelPolicy(),
) -> FewLabelSubset:
    """Draw ``n`` rows of ``labels`` (raw (N, C) or :class:`MaskedLabels`), sorted.

    ``n`` larger than the pool, or ``"all"``, returns the whole pool. The pool is the
    rows with a usable label for at least one class: an image with none would count
    towards N while teaching the probe nothing, which is not what "N labelled images"
    means.
    """
    y = apply_label_policy(labels, policy)
    n = parse_n_labels(n)
    pool = np.flatnonzero(y.mask.any(axis=1))
    if pool.size == 0:
        raise DataError("no training row has a usable label; cannot draw a few-label subset")
    rng = _rng_for(seed, n, repeat)
    if n == ALL or n >= pool.size:
        chosen = pool.copy()
    else:
        chosen = np.sort(rng.choice(pool, size=int(n), replace=False))
        chosen = _ensure_both_values(y, pool, chosen, rng)
    pos = ((y.values[chosen] == 1) & y.mask[chosen]).sum(axis=0)
    neg = ((y.values[chosen] == 0) & y.mask[chosen]).sum(axis=0)
    return FewLabelSubset(
        n_requested=n,
        repeat=int(repeat),
        seed=int(seed),
        indices=np.sort(chosen).astype(np.int64),
        pool_size=int(pool.size),
        lacking_positive=[int(c) for c in np.flatnonzero(pos == 0)],
        lacking_negative=[int(c) for c in np.flatnonzero(neg == 0)],
    )


def _ensure_both_values(y: MaskedLabels, pool: np.ndarray, chosen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Swap rows into ``chosen`` until each class has a positive and a negative, if possible
    (requirements: (class c, positive) for k = c and (class c, negative) for k = C + c)."""
    has = np.concatenate([(y.values == 1) & y.mask, (y.values == 0) & y.mask], axis=1)
    return stratify(has, pool, chosen, rng)


def draw_subsets(
    labels: Any,
    n_values: Iterable[Any] = (10, 100, 1000, ALL),
    repeats: int = 5,
    seed: int = 0,
    policy: LabelPolicy = LabelPolicy(),
    dedupe_whole_pool: bool = True,
) -> list[FewLabelSubset]:
    """Subsets for every (N, repeat). With ``dedupe_whole_pool``, an N that covers the
    whole pool (incl. ``"all"``) is drawn once: its repeats would be identical."""
    if repeats < 1:
        raise DataError(f"repeats must be >= 1; got {repeats}")
    y = apply_label_policy(labels, policy)
    out: list[FewLabelSubset] = []
    for n in (parse_n_labels(v) for v in n_values):
        for r in range(repeats):
            sub = draw_subset(y, n, seed=seed, repeat=r)
            out.append(sub)
            if dedupe_whole_pool and sub.is_whole_pool:
                break
    return out


def subset_indices(
    labels: Any,
    n: Any,
    repeats: int = 5,
    seed: int = 0,
    policy: LabelPolicy = LabelPolicy(),
) -> list[np.ndarray]:
    """Just the index arrays for ``repeats`` draws of budget ``n`` (no deduplication)."""
    y = apply_label_policy(labels, policy)
    return [draw_subset(y, n, seed=seed, repeat=r).indices for r in range(repeats)]


def rows_in_split(split_column: Sequence[str] | np.ndarray, split: str = "train") -> np.ndarray:
    """Row positions whose split equals ``split`` (e.g. from ``Corpus.index['split']``)."""
    col = np.asarray(split_column).astype(str)
    rows = np.flatnonzero(col == split)
    if rows.size == 0:
        raise DataError(f"split {split!r} has no rows (splits present: {sorted(set(col.tolist()))})")
    return rows
