"""Image–report pairs for training, read from a corpus in whole batches.

Reports are selected (``text_sections``) and tokenised once, when the dataset is built,
not on every step; images are read per batch from the memory-mapped array with one
sorted fancy-index, which is far cheaper than per-sample reads through a DataLoader.
Batch order comes from :class:`EpochBatches`, a pure function of (seed, epoch, rank), so a
resumed run sees exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from radpair.data.corpus import Corpus
from radpair.data.tensors import images_to_tensor
from radpair.errors import DataError


def select_report_text(texts: list[str], policy: str) -> list[str]:
    if policy == "full":
        return list(texts)
    from radpair.reports import select_sections

    return [select_sections(t, policy) for t in texts]


def label_matrix(frame: pd.DataFrame, columns: list[str], uncertain: str = "ignore") -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,C) float32 and a mask (N,C) that is 0 where a label is missing.

    ``uncertain`` is the CheXpert policy for -1: ``ignore`` (mask it), ``zeros`` or ``ones``.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"label columns {missing} not found (available: {list(frame.columns)})")
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
    mask = ~np.isnan(values)
    unc = values == -1
    if uncertain == "ignore":
        mask &= ~unc
    elif uncertain in ("zeros", "ones"):
        values[unc] = 0.0 if uncertain == "zeros" else 1.0
    else:
        raise DataError(f"unknown uncertainty policy {uncertain!r} (valid: ignore, zeros, ones)")
    values = np.where(mask, values, 0.0).astype(np.float32)
    return values, mask.astype(np.float32)


@dataclass
class EpochBatches:
    """Deterministic batches of one epoch for one process.

    Every process draws the same permutation from (seed, epoch), drops the tail that does
    not fill a global batch, and takes its own contiguous slice of each global batch, so
    the union over processes equals the single-process batch of the same global size.
    """

    n_items: int
    global_batch: int
    seed: int
    epoch: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.global_batch % self.world_size:
            raise DataError(f"batch size {self.global_batch} is not divisible by {self.world_size} processes")
        if self.n_items < self.global_batch:
            raise DataError(f"only {self.n_items} training items for a batch of {self.global_batch}")

    def __len__(self) -> int:
        return self.n_items // self.global_batch

    def batch(self, i: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_items)
        per = self.global_batch // self.world_size
        start = i * self.global_batch + self.rank * per
        return order[start : start + per]

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_items)
        per = self.global_batch // self.world_size
        for i in range(len(self)):
            start = i * self.global_batch + self.rank * per
            yield order[start : start + per]


class PairDataset:
    """The rows of one split of a corpus, ready to be served as training batches."""

    def __init__(
        self,
        corpus: Corpus,
        split: str | None = "train",
        tokenizer=None,
        text_sections: str = "full",
        max_length: int = 128,
        label_columns: list[str] | None = None,
        label_source: str = "ground_truth",
        uncertain: str = "ignore",
        views: list[str] | None = None,
    ) -> None:
        self.corpus = corpus
        rows = corpus.split_index(split)  # keeps the corpus-wide row labels
        if views:
            rows = rows[rows["view"].isin(views)]
            if rows.empty:
                raise DataError(f"{corpus.root}: no {split!r} rows with views {views}")
        self.rows = rows.reset_index(drop=True)
        self.image_rows = self.rows["image_index"].to_numpy(dtype=np.int64)
        self.input_ids = self.attention_mask = None
        if tokenizer is not None:
            texts = select_report_text(self.rows["report"].astype(str).tolist(), text_sections)
            enc = tokenizer(texts, max_length=max_length, truncation=True, padding="max_length", return_tensors="np")
            self.input_ids = enc["input_ids"].astype(np.int64)
            self.attention_mask = enc["attention_mask"].astype(np.int64)
        self.labels = self.label_mask = None
        if label_columns:
            frame = corpus.labels(label_source).loc[rows.index]
            self.labels, self.label_mask = label_matrix(frame, label_columns, uncertain)

    def __len__(self) -> int:
        return len(self.rows)

    def get_batch(self, items: np.ndarray) -> dict[str, torch.Tensor]:
        """Gather rows ``items`` (positions in this split) into a batch of tensors."""
        items = np.asarray(items, dtype=np.int64)
        image_rows = self.image_rows[items]
        order = np.argsort(image_rows, kind="stable")
        pixels = np.empty((len(items), *self.corpus.image_size), dtype=np.uint8)
        pixels[order] = self.corpus.images[image_rows[order]]  # sorted reads are sequential on disk
        batch = {"images": images_to_tensor(pixels), "ids": torch.from_numpy(image_rows)}
        if self.input_ids is not None:
            mask = self.attention_mask[items]
            width = max(int(mask.sum(1).max()), 1)  # pad to the batch's longest report, not max_length
            batch["input_ids"] = torch.from_numpy(np.ascontiguousarray(self.input_ids[items, :width]))
            batch["attention_mask"] = torch.from_numpy(np.ascontiguousarray(mask[:, :width]))
        if self.labels is not None:
            batch["labels"] = torch.from_numpy(self.labels[items])
            batch["label_mask"] = torch.from_numpy(self.label_mask[items])
        return batch
