"""Image–report pairs for training, read from a corpus in whole batches.

Reports are selected (``text_sections``) and tokenised once, when the dataset is built,
not on every step, in chunks into a compact int32 table (ids padded to ``max_length`` plus
one length per report): tokenising a whole corpus in one call held the tokenizer's
per-report objects for every report at once (about 15 KiB per pair, +1.8 GiB at 100k
pairs). Images are read per batch with ``Corpus.read_images`` (sorted ``pread`` calls,
consecutive rows merged), which is far cheaper than per-sample reads through a DataLoader
and keeps the image file's pages out of the process's resident set.
Batch order comes from :class:`EpochBatches`, a pure function of (seed, epoch, rank), so a
resumed run sees exactly the batches an uninterrupted one would have seen.

Two checks guard what reaches a loss. A report whose selected sections are empty (the
``findings`` policy on a report without FINDINGS) would become the same ``[CLS][SEP]`` input
as every other such report, and identical texts are false negatives for a contrastive
loss: ``empty_text`` says whether such rows are dropped (the default, listed in
:attr:`PairDataset.dropped`), kept, or an error. :func:`label_matrix` refuses label values
other than 1, 0, -1 and empty, so an ordinal column never reaches a binary loss.
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


TOKENIZE_CHUNK = 4096


EMPTY_TEXT_POLICIES = ("drop", "keep", "error")


@dataclass
class TokenTable:
    """Token ids of many texts: (N, max_length) right-padded ids and (N,) int32 lengths.

    Ids are uint16 when the vocabulary fits (every BERT vocabulary in use does), else int32.
    ``empty`` marks the texts whose selected sections are empty or whitespace only (they
    still hold their special tokens).
    """

    ids: np.ndarray
    lengths: np.ndarray
    empty: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> "TokenTable":
        """The rows where boolean ``keep`` is true (a copy)."""
        return TokenTable(self.ids[keep], self.lengths[keep], None if self.empty is None else self.empty[keep])

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """int64 ``input_ids`` and ``attention_mask`` of rows ``items``, padded to their longest."""
        lengths = self.lengths[items]
        width = max(int(lengths.max()) if len(lengths) else 1, 1)
        ids = torch.from_numpy(self.ids[items, :width].astype(np.int64))
        mask = torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64))
        return ids, mask


def tokenize_texts(
    texts, tokenizer, max_length: int, policy: str = "full", chunk: int = TOKENIZE_CHUNK
) -> TokenTable:
    """Select sections and tokenise ``texts`` ``chunk`` at a time into a :class:`TokenTable`.

    Only one chunk's strings and tokenizer objects are alive at once, so the extra memory
    is bounded by the chunk, and the table costs 2 (or 4) bytes per token slot.
    """
    texts = list(texts)
    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else 0
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
    ids = np.full((len(texts), max_length), pad, dtype=dtype)
    lengths = np.zeros(len(texts), dtype=np.int32)
    empty = np.zeros(len(texts), dtype=bool)
    for start in range(0, len(texts), chunk):
        part = select_report_text(texts[start : start + chunk], policy)
        empty[start : start + len(part)] = [not t.strip() for t in part]
        enc = tokenizer(part, max_length=max_length, truncation=True, padding=False)["input_ids"]
        if ids.dtype == np.uint16 and max((max(r) for r in enc if r), default=0) > np.iinfo(np.uint16).max:
            ids = ids.astype(np.int32)  # a vocabulary with gaps: ids beyond its length
        for k, row in enumerate(enc):
            ids[start + k, : len(row)] = row
            lengths[start + k] = len(row)
        del part, enc
    return TokenTable(ids, lengths, empty)


BINARY_LABEL_VALUES = (1.0, 0.0, -1.0)


def label_matrix(
    frame: pd.DataFrame, columns: list[str], uncertain: str = "ignore", source: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,C) float32 and a mask (N,C) that is 0 where a label is missing.

    ``uncertain`` is the CheXpert policy for -1: ``ignore`` (mask it), ``zeros`` or ``ones``.
    The columns feed a binary loss, so each value must be 1, 0, -1 or empty (NaN, None or
    a blank string); anything else (an ordinal grade such as ``edema_severity`` 2 or 3, a
    word) raises :class:`DataError` naming ``source`` (e.g. the corpus and label source),
    the column and the offending values.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"label columns {missing} not found (available: {list(frame.columns)})")
    where = f"{source}: " if source else ""
    numeric = []
    for col in columns:
        raw = frame[col]
        num = pd.to_numeric(raw, errors="coerce")
        blank = raw.isna() | raw.astype(str).str.strip().eq("")
        bad_text = num.isna() & ~blank  # non-numeric, non-empty
        bad_num = num.notna() & ~num.isin(BINARY_LABEL_VALUES)
        if bad_text.any() or bad_num.any():
            bad = sorted({float(v) for v in num[bad_num]}) + sorted({str(v) for v in raw[bad_text]})
            shown = bad[:10] + (["..."] if len(bad) > 10 else [])
            n_rows = int((bad_text | bad_num).sum())
            raise DataError(
                f"{where}label column {col!r} holds values {shown} ({n_rows} of {len(raw)} rows); "
                "a binary loss needs 1, 0, -1 or empty — use a multiclass/ordinal task"
            )
        numeric.append(num.to_numpy(dtype=np.float32))
    values = np.stack(numeric, axis=1) if numeric else np.zeros((len(frame), 0), dtype=np.float32)
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
    """The rows of one split of a corpus, ready to be served as training batches.

    With a tokenizer, ``empty_text`` decides what happens to rows whose selected text
    (``text_sections``) is empty or whitespace only: ``drop`` removes them (they are listed
    in :attr:`dropped`, with ``image_id``, ``image_index`` and ``reason``), ``keep`` keeps
    them (they become ``[CLS][SEP]``), ``error`` raises :class:`DataError`. Without a
    tokenizer (methods that read no text) nothing is dropped.
    """

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
        empty_text: str = "drop",
    ) -> None:
        if empty_text not in EMPTY_TEXT_POLICIES:
            raise DataError(f"unknown empty_text policy {empty_text!r} (valid: {', '.join(EMPTY_TEXT_POLICIES)})")
        self.corpus = corpus
        self.text_sections = text_sections
        self.empty_text = empty_text
        rows = corpus.split_index(split)  # keeps the corpus-wide row labels
        if views:
            rows = rows[rows["view"].isin(views)]
            if rows.empty:
                raise DataError(f"{corpus.root}: no {split!r} rows with views {views}")
        self.rows_before_drop = len(rows)
        self.n_empty_text = 0
        self.dropped = pd.DataFrame(
            {"image_id": pd.Series(dtype=str), "image_index": pd.Series(dtype=np.int64), "reason": pd.Series(dtype=str)}
        )
        self.tokens: TokenTable | None = None
        if tokenizer is not None:
            self.tokens = tokenize_texts(rows["report"].astype(str), tokenizer, max_length, text_sections)
            empty = self.tokens.empty
            self.n_empty_text = int(empty.sum())
            if self.n_empty_text and empty_text == "error":
                examples = rows["image_id"].astype(str)[empty].tolist()[:5]
                raise DataError(
                    f"{corpus.root}: {self.n_empty_text} of {len(rows)} {split!r} rows have an empty text under "
                    f"section policy {text_sections!r} (e.g. image ids {examples}); set data.empty_text=drop to "
                    "train without them, keep to train on them as empty texts, or choose another data.text_sections"
                )
            if self.n_empty_text and empty_text == "drop":
                gone = rows[empty]
                self.dropped = pd.DataFrame(
                    {
                        "image_id": gone["image_id"].astype(str).to_numpy(),
                        "image_index": gone["image_index"].to_numpy(dtype=np.int64),
                        "reason": f"empty text (section policy {text_sections})",
                    }
                )
                rows = rows[~empty]
                self.tokens = self.tokens.subset(~empty)
                if rows.empty:
                    raise DataError(
                        f"{corpus.root}: every {split!r} row has an empty text under section policy "
                        f"{text_sections!r}; choose another data.text_sections"
                    )
        self.rows = rows.reset_index(drop=True)
        self.image_rows = self.rows["image_index"].to_numpy(dtype=np.int64)
        self.labels = self.label_mask = None
        if label_columns:
            frame = corpus.labels(label_source).loc[rows.index]
            self.labels, self.label_mask = label_matrix(
                frame, label_columns, uncertain, source=f"{corpus.root} (label source {label_source!r})"
            )

    def __len__(self) -> int:
        return len(self.rows)

    def get_batch(self, items: np.ndarray) -> dict[str, torch.Tensor]:
        """Gather rows ``items`` (positions in this split) into a batch of tensors."""
        items = np.asarray(items, dtype=np.int64)
        image_rows = self.image_rows[items]
        pixels = self.corpus.read_images(image_rows)
        batch = {"images": images_to_tensor(pixels), "ids": torch.from_numpy(image_rows)}
        if self.tokens is not None:
            # padded to the batch's longest report, not to max_length
            batch["input_ids"], batch["attention_mask"] = self.tokens.batch(items)
        if self.labels is not None:
            batch["labels"] = torch.from_numpy(self.labels[items])
            batch["label_mask"] = torch.from_numpy(self.label_mask[items])
        return batch
