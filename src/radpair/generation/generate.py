"""Write reports for radiographs with a finished captioning run (``radpair generate``).

Images come from a corpus folder (one split, or every row), are scaled exactly as in
training, and go through the run's own decoder with a :class:`DecodingConfig`; the text
is the tokenizer's decoding of the generated ids. Output: one row per image, so that
``radpair evaluate generation`` can join it to the references by ``image_id``.

Generation is deterministic: eval mode, fixed batches in corpus order, and sampling (when
asked for) draws only from a ``torch.Generator`` seeded by ``seed``; the caller's global
RNG is left untouched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from radpair.errors import DataError
from radpair.generation.decoding import DecodingConfig, decode
from radpair.generation.runs import GenerativeRun, load_generative_run

OUTPUT_COLUMNS = ["image_id", "patient_id", "study_id", "report", "n_tokens", "finished", "score"]


@dataclass
class Generated:
    """The generated reports (``frame``) and how they were made."""

    frame: pd.DataFrame
    run: dict
    decoding: dict
    seconds: float
    input_problems: list[str]

    @property
    def reports_per_second(self) -> float:
        return len(self.frame) / self.seconds if self.seconds > 0 else float("nan")


def decoding_limit(model, cfg: DecodingConfig) -> DecodingConfig:
    """``cfg`` with ``max_length`` cut to what the decoder can write (its positions, less BOS)."""
    limit = getattr(model, "max_new_tokens", None)
    if limit is not None and cfg.max_length > limit:
        return DecodingConfig(**{**cfg.__dict__, "max_length": int(limit)})
    return cfg


def generate_for_images(run: GenerativeRun, images: np.ndarray, cfg: DecodingConfig, batch_size: int = 32,
                        seed: int = 0, rows: Sequence[int] | None = None, progress: bool = False):
    """Decode uint8 images (N, H, W) (``rows`` of them, in order): (texts, token counts, finished, scores)."""
    from radpair.data.tensors import images_to_tensor
    from radpair.progress import count_progress

    cfg = decoding_limit(run.model, cfg)
    cfg.validate()
    rows = np.arange(images.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    gen = torch.Generator(device=run.device).manual_seed(int(seed))
    texts: list[str] = []
    n_tokens: list[int] = []
    finished: list[bool] = []
    scores: list[float] = []
    model = run.model
    with torch.inference_mode(), count_progress("generating", "reports", enabled=progress) as bar:
        task = bar.add_task("generating", total=len(rows))
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            x = images_to_tensor(images[part]).to(run.device)
            out = decode(model.decode_step, model.start_decoding(x), len(part), bos_id=model.bos_id,
                         eos_id=model.eos_id, cfg=cfg, generator=gen)
            texts += run.tokenizer.batch_decode(out.tokens, skip_special_tokens=True)
            n_tokens += [len(t) for t in out.tokens]
            finished += out.finished.tolist()
            scores += out.scores.tolist()
            bar.advance(task, len(part))
    return texts, n_tokens, finished, scores


def generate_reports(run: str | Path | GenerativeRun, corpus, *, split: str | None = "test",
                     views: Sequence[str] | None = None, limit: int | None = None,
                     image_ids: Sequence[str] | None = None,
                     decoding: DecodingConfig | None = None, batch_size: int = 32, seed: int = 0,
                     tokenizer: str | Path | None = None, device: str = "cpu", progress: bool = False) -> Generated:
    """Generate a report for each image of ``corpus`` (``split``; ``None`` or ``all``: every
    row; ``image_ids``: only these images of it, in corpus order; ``limit``: the first that many
    rows, in corpus order)."""
    import warnings

    from radpair.data.corpus import Corpus
    from radpair.models.export import input_mismatches

    if not isinstance(run, GenerativeRun):
        run = load_generative_run(run, tokenizer=tokenizer, device=device)
    if not isinstance(corpus, Corpus):
        corpus = Corpus.open(corpus)
    problems = input_mismatches(run.input_meta, corpus)
    for problem in problems:
        warnings.warn(f"{corpus.root} differs from the training images of {run.root}: {problem}", stacklevel=2)
    index = corpus.index if split in (None, "all") else corpus.split_index(split)
    if views:
        index = index[index["view"].astype(str).isin(list(views))]
    if image_ids is not None:
        wanted = set(map(str, image_ids))
        missing = wanted - set(index["image_id"].astype(str))
        if missing:
            raise DataError(f"{corpus.root}: {len(missing)} requested image ids are not in split {split!r} "
                            f"(e.g. {sorted(missing)[:3]})")
        index = index[index["image_id"].astype(str).isin(wanted)]
    if limit is not None:
        index = index.iloc[: int(limit)]
    if index.empty:
        raise DataError(f"{corpus.root}: no images to write reports for (split {split!r}, views {views})")
    cfg = decoding_limit(run.model, decoding or DecodingConfig())
    t0 = time.perf_counter()
    texts, n_tokens, finished, scores = generate_for_images(run, corpus.images, cfg, batch_size, seed,
                                                            index["image_index"].to_numpy(), progress)
    seconds = time.perf_counter() - t0
    frame = pd.DataFrame({"image_id": index["image_id"].astype(str).to_numpy(),
                          "patient_id": index["patient_id"].astype(str).to_numpy(),
                          "study_id": index["study_id"].astype(str).to_numpy(),
                          "report": texts, "n_tokens": n_tokens, "finished": finished, "score": scores})
    return Generated(frame=frame[OUTPUT_COLUMNS], run=run.describe(), decoding=dict(cfg.__dict__), seconds=seconds,
                     input_problems=problems)


def write_generated(result: Generated, path: str | Path) -> Path:
    """CSV of the reports, and ``<path>.json`` beside it with the run, decoding and timing."""
    import json

    from radpair.data.corpus import atomic_write_csv, atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(result.frame, path)
    info = {"run": result.run, "decoding": result.decoding, "reports": len(result.frame),
            "seconds": round(result.seconds, 3), "reports_per_second": round(result.reports_per_second, 3),
            "unfinished": int((~result.frame["finished"].astype(bool)).sum()), "input_problems": result.input_problems}
    atomic_write_text(path.with_suffix(path.suffix + ".json"), json.dumps(info, indent=2) + "\n")
    return path
