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

    What is served follows the method's declared needs (:mod:`radpair.methods.base`):
    ``text_fields`` (each tokenised with its own section policy; without them but with a
    ``tokenizer``, one field ``report`` under ``text_sections``), labels (binary
    ``label_columns`` or a ``label_need`` naming a task), per-row ``study_code``,
    ``patient_code`` and ``report_code`` (``row_codes``), and rows are dropped whose report
    lacks a ``require_sections`` section.

    With a tokenizer, each field's ``empty_text`` rule (default ``empty_text``) decides what
    happens to rows whose selected text is empty or whitespace only: ``drop`` removes them,
    ``keep`` keeps them (they become ``[CLS][SEP]``), ``error`` raises :class:`DataError`.
    Every removed row is listed in :attr:`dropped` (``image_id``, ``image_index``,
    ``reason``). Without a tokenizer (methods that read no text) nothing is dropped.
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
        text_fields=None,
        require_sections: tuple[str, ...] = (),
        row_codes: bool = False,
        label_need=None,
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
        gone: list[pd.DataFrame] = []
        if require_sections:
            texts = rows["report"].astype(str).tolist()
            lacking = np.zeros(len(rows), dtype=bool)
            reasons = np.full(len(rows), "", dtype=object)
            for section in require_sections:
                empty = np.array([not t.strip() for t in select_report_text(texts, section)], dtype=bool)
                reasons[empty & ~lacking] = f"report has no {section} section (the method requires it)"
                lacking |= empty
            if lacking.any():
                gone.append(_dropped(rows[lacking], reasons[lacking]))
                rows = rows[~lacking]
                if rows.empty:
                    raise DataError(f"{corpus.root}: no {split!r} report has every section of {list(require_sections)}")
        self.fields: dict[str, TokenTable] = {}
        if tokenizer is not None:
            if text_fields is None:
                from radpair.methods.base import TextField

                text_fields = (TextField("report"),)
            keep = np.ones(len(rows), dtype=bool)
            reasons = np.full(len(rows), "", dtype=object)
            texts = rows["report"].astype(str)
            for f in text_fields:
                sections = f.sections or text_sections
                rule = f.empty_text or empty_text
                table = tokenize_texts(texts, tokenizer, f.max_length or max_length, sections)
                self.fields[f.name] = table
                empty = table.empty
                self.n_empty_text = max(self.n_empty_text, int(empty.sum()))
                if empty.any() and rule == "error":
                    examples = rows["image_id"].astype(str)[empty].tolist()[:5]
                    raise DataError(
                        f"{corpus.root}: {int(empty.sum())} of {len(rows)} {split!r} rows have an empty text under "
                        f"section policy {sections!r} (e.g. image ids {examples}); set data.empty_text=drop to "
                        "train without them, keep to train on them as empty texts, or choose another data.text_sections"
                    )
                if rule == "drop":
                    what = f"{f.name!r} " if len(text_fields) > 1 else ""
                    reasons[empty & keep] = f"empty {what}text (section policy {sections})"
                    keep &= ~empty
            if not keep.all():
                gone.append(_dropped(rows[~keep], reasons[~keep]))
                rows = rows[keep]
                self.fields = {name: t.subset(keep) for name, t in self.fields.items()}
                if rows.empty:
                    raise DataError(
                        f"{corpus.root}: every {split!r} row has an empty text under section policy "
                        f"{text_sections!r}; choose another data.text_sections"
                    )
        self.dropped = pd.concat(gone, ignore_index=True) if gone else _dropped(rows.iloc[:0], np.array([], dtype=object))
        self.corpus_rows = rows.index.to_numpy(dtype=np.int64)
        self.rows = rows.reset_index(drop=True)
        self.image_rows = self.rows["image_index"].to_numpy(dtype=np.int64)
        self.labels = self.label_mask = None
        self.task_labels = None
        self.labels_capped = 0
        if label_need is not None and label_need.task:
            self._load_task_labels(label_need)
        else:
            columns = list(label_need.columns) if label_need is not None else label_columns
            if columns:
                frame = corpus.labels(label_source).loc[rows.index]
                self.labels, self.label_mask = label_matrix(
                    frame, columns, uncertain, source=f"{corpus.root} (label source {label_source!r})"
                )
                if label_need is not None and label_need.max_fraction is not None:
                    self.label_mask = self._cap(self.label_mask, label_need)
        self.codes: dict[str, np.ndarray] = {}
        if row_codes:
            # "same report" means the same text the method reads: its report field's sections
            # (TIMNet compares FINDINGS), else the whole report
            sections = "full"
            for f in text_fields or ():
                if f.name == "report":
                    sections = f.sections or text_sections
            read = select_report_text(self.rows["report"].astype(str).tolist(), sections)
            self.codes = {
                "study_code": _codes(self.rows["study_id"]),
                "patient_code": _codes(self.rows["patient_id"]),
                "report_code": _codes(pd.Series([normalise_report_text(t) for t in read])),
            }

    @property
    def tokens(self) -> TokenTable | None:
        """The ``report`` field's tokens (``None`` for a method that reads no text)."""
        return self.fields.get("report", next(iter(self.fields.values()), None))

    def _load_task_labels(self, need) -> None:
        """Labels of a task (:mod:`radpair.tasks`) under its schema, optionally capped."""
        from dataclasses import replace

        from radpair.evaluation.metrics import BlankPolicy
        from radpair.tasks.spec import load_task, raw_labels

        spec = load_task(need.task)
        raw, where = raw_labels(self.corpus, spec, need.source, self.corpus_rows, spec.columns)
        schema = spec.schema_for(need.source)
        if need.blank is not None:
            schema = replace(schema, blank=BlankPolicy(need.blank))
        labels = schema.encode(raw, spec.output_columns, where)
        y, mask = labels.targets()
        if need.max_fraction is not None:
            mask = self._cap(mask, need)
        self.task_labels = labels
        self.labels, self.label_mask = y, mask

    def _cap(self, mask: np.ndarray, need) -> np.ndarray:
        """Keep labels on at most ``need.max_fraction`` of the rows (a seeded draw among the
        labelled ones); the others become unlabelled. Counted in :attr:`labels_capped`."""
        usable = np.flatnonzero(mask if mask.ndim == 1 else (mask > 0).any(axis=1))
        cap = int(np.floor(need.max_fraction * len(self.rows)))
        if len(usable) <= cap:
            return mask
        drop = np.random.default_rng([int(need.fraction_seed), 0x1ABE1]).permutation(usable)[cap:]
        mask = mask.copy()
        mask[drop] = 0
        self.labels_capped = len(drop)
        return mask

    def labelled_rows(self) -> np.ndarray:
        """Positions of rows with at least one usable label."""
        if self.label_mask is None:
            return np.zeros(0, dtype=np.int64)
        m = self.label_mask > 0  # bool masks (task labels) and 0/1 float masks (binary columns)
        return np.flatnonzero(m if m.ndim == 1 else m.any(axis=1))

    def statistics(self, items: np.ndarray | None = None):
        """Row and class counts of rows ``items`` (default: all) for a method's setup hook
        (:class:`radpair.methods.DatasetStats`)."""
        from radpair.methods.base import DatasetStats

        items = np.arange(len(self)) if items is None else np.asarray(items, dtype=np.int64)
        if self.labels is None:
            return DatasetStats(n_rows=len(items))
        labelled = np.intersect1d(self.labelled_rows(), items)
        labels, mask = self.labels[items], self.label_mask[items]
        if labels.ndim == 1:  # class codes of a categorical task
            k = self.task_labels.schema.n_levels
            counts = np.bincount(labels[mask.astype(bool)], minlength=k)
            names = self.task_labels.class_names
        else:
            counts = ((labels > 0) & (mask > 0)).sum(axis=0)
            names = self.task_labels.class_names if self.task_labels is not None else []
        return DatasetStats(n_rows=len(items), n_labelled=len(labelled), class_counts=counts, class_names=list(names))

    def __len__(self) -> int:
        return len(self.rows)

    def get_batch(self, items: np.ndarray) -> dict[str, torch.Tensor]:
        """Gather rows ``items`` (positions in this split) into a batch of tensors."""
        return self.read(items)

    def read(self, items: np.ndarray, images: bool = True, text: bool = True, prefix: str = "") -> dict[str, torch.Tensor]:
        """Rows ``items`` as tensors; ``prefix`` names extra rows (``impostor_images``, ...)."""
        from radpair.methods.base import text_keys

        items = np.asarray(items, dtype=np.int64)
        image_rows = self.image_rows[items]
        batch = {"ids": torch.from_numpy(image_rows)}
        if images:
            batch["images"] = images_to_tensor(self.corpus.read_images(image_rows))
        if text:
            for name, table in self.fields.items():
                ids_key, mask_key = text_keys(name)
                # padded to the batch's longest report, not to max_length
                batch[ids_key], batch[mask_key] = table.batch(items)
        if self.labels is not None:
            batch["labels"] = torch.from_numpy(self.labels[items])
            batch["label_mask"] = torch.from_numpy(self.label_mask[items])
        for key, codes in self.codes.items():
            batch[key] = torch.from_numpy(codes[items])
        if prefix:
            batch = {f"{prefix}_{k}": v for k, v in batch.items()}
        return batch


def normalise_report_text(text: str) -> str:
    """Report text for "same report" checks: lower case, whitespace collapsed."""
    return " ".join(str(text).lower().split())


def _codes(values: pd.Series) -> np.ndarray:
    return pd.factorize(values.astype(str))[0].astype(np.int64)


def _dropped(rows: pd.DataFrame, reasons: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": rows["image_id"].astype(str).to_numpy(),
            "image_index": rows["image_index"].to_numpy(dtype=np.int64),
            "reason": pd.Series(list(reasons), dtype=str).to_numpy(),
        }
    )
