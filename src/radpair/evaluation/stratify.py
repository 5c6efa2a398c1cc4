"""Making a random subset usable: every requirement met where the pool allows.

A random 10 images often lack any positive of a rare finding, which makes that class
unlearnable and unscorable. Starting from a plain random draw, rows that provide a missing
requirement are swapped in for rows nothing depends on, rarest requirement first (they
have the fewest candidates), so the subset stays as random as possible. Shared by the
engine's few-label subsets (:mod:`radpair.evaluation.sampling`) and the transfer
protocol's patient-level draws (:mod:`radpair.transfer.subsets`).
"""

from __future__ import annotations

import numpy as np


def stratify(has: np.ndarray, pool: np.ndarray, chosen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of ``chosen`` after swaps; ``has[r, k]``: row r satisfies requirement k.

    ``pool`` holds the rows that may be drawn; the size of the subset never changes.
    """
    in_subset = np.zeros(has.shape[0], dtype=bool)
    in_subset[chosen] = True
    counts = has[in_subset].sum(axis=0)
    available = has[pool].sum(axis=0)
    for k in np.argsort(available, kind="stable"):
        if counts[k] > 0 or available[k] == 0:
            continue
        candidates = pool[has[pool, k] & ~in_subset[pool]]
        members = np.flatnonzero(in_subset)
        # a row may leave if every requirement it serves is also served by another row
        removable = members[~(has[members] & (counts == 1)).any(axis=1)]
        if candidates.size == 0 or removable.size == 0:
            continue
        add, drop = rng.choice(candidates), rng.choice(removable)
        in_subset[drop], in_subset[add] = False, True
        counts += has[add].astype(counts.dtype) - has[drop].astype(counts.dtype)
    return np.flatnonzero(in_subset)


__all__ = ["stratify"]
