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
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from radpair.data.pairs import EpochBatches, PairDataset
from radpair.errors import ConfigError


class BatchPlan:
    """Rows (positions into ``items``) of every micro-batch of every step, per process."""

    def __init__(
        self, items: np.ndarray, global_batch: int, seed: int, rank: int, world_size: int, accumulation: int = 1,
        epoch_offset: int = 0,
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
        self.epoch_offset = epoch_offset
        """Epochs of earlier phases: a later phase's shuffles continue the run's epoch count."""
        self._epoch = -1
        self._batches: list[np.ndarray] = []

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of zero-based ``step``."""
        return divmod(step, self.steps_per_epoch)

    def global_rows(self, step: int) -> np.ndarray:
        """Every row of the step's global batch (all processes, all micro-batches)."""
        epoch, i = self.position(step)
        if epoch != self._epoch:  # one permutation per epoch, not per step
            self._batches = list(EpochBatches(len(self.items), self.global_batch, self.seed, epoch + self.epoch_offset))
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


class ExtraRowPlan:
    """The partner of every training row for each epoch (:class:`radpair.methods.ExtraRows`).

    ``draw(seed, epoch, items, dataset)`` returns, for the phase's ``items``, the position
    within ``items`` of each row's partner; it is a pure function, so the partners of a
    step depend on the step alone and resume is exact. Computed once per epoch.
    """

    def __init__(self, extra, items: np.ndarray, seed: int, n_rows: int, dataset, epoch_offset: int = 0) -> None:
        self.extra = extra
        self.items = np.asarray(items, dtype=np.int64)
        self.seed = seed
        self.n_rows = n_rows
        self.dataset = dataset
        self.epoch_offset = epoch_offset
        self._epoch = -1
        self._partner = np.zeros(0, dtype=np.int64)

    def partners(self, epoch: int, rows: np.ndarray) -> np.ndarray:
        if epoch != self._epoch:
            perm = np.asarray(self.extra.draw(self.seed, epoch + self.epoch_offset, self.items, self.dataset))
            if perm.shape != self.items.shape or perm.min(initial=0) < 0 or perm.max(initial=0) >= len(self.items):
                raise ConfigError(f"extra rows {self.extra.prefix!r}: the draw must give one position in [0, "
                                  f"{len(self.items)}) per training row, got shape {perm.shape}")
            partner = np.full(self.n_rows, -1, dtype=np.int64)
            partner[self.items] = self.items[perm]
            self._partner, self._epoch = partner, epoch
        return self._partner[rows]


@dataclass
class PhaseSpan:
    """One phase of a run: its rows, batch plan, steps and (optional) extra-row plan."""

    phase: "object"  # radpair.methods.Phase
    index: int
    plan: BatchPlan
    first_step: int
    steps: int
    epoch_offset: int
    extra: ExtraRowPlan | None = None


class Schedule:
    """The run as a sequence of phases; step ``s`` belongs to exactly one phase.

    Exposes the :class:`BatchPlan` interface (``rows``, ``position``,
    ``steps_per_epoch``) over the whole run, so a one-phase run is its plan unchanged.
    """

    def __init__(self, spans: list[PhaseSpan]) -> None:
        if not spans:
            raise ConfigError("a run needs at least one phase")
        self.spans = spans
        self.total_steps = sum(sp.steps for sp in spans)

    def span(self, step: int) -> tuple[PhaseSpan, int]:
        for sp in self.spans:
            if step < sp.first_step + sp.steps:
                return sp, step - sp.first_step
        last = self.spans[-1]
        return last, step - last.first_step

    @property
    def steps_per_epoch(self) -> int:
        return self.spans[0].plan.steps_per_epoch

    def position(self, step: int) -> tuple[int, int]:
        """(epoch counted over the whole run, batch within it) of zero-based ``step``."""
        sp, local = self.span(step)
        epoch, batch = sp.plan.position(local)
        return epoch + sp.epoch_offset, batch

    def rows(self, step: int) -> list[np.ndarray]:
        sp, local = self.span(step)
        return sp.plan.rows(local)

    def extra_rows(self, step: int, rows: list[np.ndarray]) -> list[np.ndarray] | None:
        sp, local = self.span(step)
        if sp.extra is None:
            return None
        epoch = sp.plan.position(local)[0]
        return [sp.extra.partners(epoch, r) for r in rows]


def read_step(dataset: PairDataset, plan: "BatchPlan | Schedule", step: int) -> list[dict[str, torch.Tensor]]:
    """This process's micro-batches of ``step``, with the method's extra rows (if any) merged in."""
    rows = plan.rows(step)
    micro = [dataset.get_batch(r) for r in rows]
    extra = plan.extra_rows(step, rows) if hasattr(plan, "extra_rows") else None
    if extra is not None:
        spec = plan.span(step)[0].extra.extra
        for batch, partner in zip(micro, extra):
            batch.update(dataset.read(partner, images=spec.images, text=spec.text, prefix=spec.prefix))
    return micro


class BatchReader:
    """Reads a step's micro-batches from the dataset, optionally one step ahead in a thread."""

    def __init__(
        self,
        dataset: PairDataset,
        plan: "BatchPlan | Schedule",
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
        micro = read_step(self.dataset, self.plan, step)
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
