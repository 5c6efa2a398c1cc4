"""Which rows each process trains on at each step, and reading them ahead of time.

The order of an epoch comes from :class:`radpair.data.pairs.EpochBatches` (a pure function
of seed and epoch, reshuffled every epoch), so the position in the data is just the step
number: nothing about the sampler needs saving beyond it.

The global batch of one optimiser step is split first into ``accumulation`` contiguous
micro-batches, then each micro-batch into one contiguous slice per process. Micro-batch
``j`` of the global batch is therefore the same set of rows whatever the number of
processes, so 1 process and N processes see identical contrastive batches; with
``accumulation == 1`` the slices equal ``EpochBatches``' own per-rank slices.

Batches are read from the memory-mapped corpus by one background thread, one step
ahead, and (on CPU) finished there too — augmentation included, which costs about a
tenth of a small model's step: reading and augmenting a step's batch depends on nothing
but its step number (augmentation draws from a generator seeded by the step), so
prefetching changes timing only.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

from radpair.data.pairs import EpochBatches, PairDataset
from radpair.errors import ConfigError


class BatchPlan:
    """Rows (positions into ``items``) of every micro-batch of every step, per process."""

    def __init__(
        self, items: np.ndarray, global_batch: int, seed: int, rank: int, world_size: int, accumulation: int = 1
    ) -> None:
        if global_batch % (world_size * accumulation):
            raise ConfigError(
                f"data.batch_size={global_batch} must be divisible by processes x train.grad_accumulation "
                f"= {world_size} x {accumulation}"
            )
        if len(items) < global_batch:
            raise ConfigError(f"only {len(items)} training rows for a batch of {global_batch}; lower data.batch_size")
        self.items = np.asarray(items)
        self.global_batch = global_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.accumulation = accumulation
        self.micro = global_batch // accumulation
        self.per_process = self.micro // world_size
        self.steps_per_epoch = len(self.items) // global_batch
        self._epoch = -1
        self._batches: list[np.ndarray] = []

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of zero-based ``step``."""
        return divmod(step, self.steps_per_epoch)

    def global_rows(self, step: int) -> np.ndarray:
        """Every row of the step's global batch (all processes, all micro-batches)."""
        epoch, i = self.position(step)
        if epoch != self._epoch:  # one permutation per epoch, not per step
            self._batches = list(EpochBatches(len(self.items), self.global_batch, self.seed, epoch))
            self._epoch = epoch
        return self.items[self._batches[i]]

    def rows(self, step: int) -> list[np.ndarray]:
        """This process's rows, one array per micro-batch."""
        rows = self.global_rows(step)
        out = []
        for j in range(self.accumulation):
            start = j * self.micro + self.rank * self.per_process
            out.append(rows[start : start + self.per_process])
        return out


class BatchReader:
    """Reads a step's micro-batches from the dataset, optionally one step ahead in a thread."""

    def __init__(
        self,
        dataset: PairDataset,
        plan: BatchPlan,
        prefetch: bool = True,
        pin_memory: bool = False,
        finish: Callable[[int, list[dict[str, torch.Tensor]]], list[dict[str, torch.Tensor]]] | None = None,
    ) -> None:
        """``finish(step, micro_batches)`` runs in the reading thread after the read."""
        self.dataset = dataset
        self.plan = plan
        self.pin_memory = pin_memory
        self.finish = finish
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radpair-prefetch") if prefetch else None
        self._pending: tuple[int, Future] | None = None

    def _load(self, step: int) -> list[dict[str, torch.Tensor]]:
        micro = [self.dataset.get_batch(rows) for rows in self.plan.rows(step)]
        if self.pin_memory:
            micro = [{k: v.pin_memory() for k, v in b.items()} for b in micro]
        if self.finish is not None:
            micro = self.finish(step, micro)
        return micro

    def get(self, step: int, next_step: int | None = None) -> list[dict[str, torch.Tensor]]:
        """The micro-batches of ``step``; starts reading ``next_step`` in the background."""
        if self._pending is not None and self._pending[0] == step:
            batches = self._pending[1].result()
        else:
            if self._pending is not None:  # a read for another step: let it finish, drop it
                self._pending[1].cancel() or self._pending[1].exception()
            batches = self._load(step)
        self._pending = None
        if self._pool is not None and next_step is not None:
            self._pending = (next_step, self._pool.submit(self._load, next_step))
        return batches

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending = None
