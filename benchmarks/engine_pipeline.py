"""End-to-end pretraining images/s vs the model alone vs a plain reference loop.

    python benchmarks/engine_pipeline.py --threads 2 [--file-size 2048] [--json out.json]

One process, one run of ``Trainer.fit`` on the ConVIRT CPU preset (``configs/convirt_cpu.yaml``
with ``train.channels_last=true``), with three things interleaved through its ``on_step``
hook so that machine-speed drift hits all of them alike:

* **end-to-end** — the engine's own steps: prefetched image reads (`pread`), augmentation,
  forward, InfoNCE, backward, clipping, optimiser, scheduler, logging, checkpoints every
  ``--checkpoint-every`` steps. Time spent inside the hook is subtracted, and the step
  right after each hook is not counted (its batch was prepared during the hook).
* **model only** — a copy of the same model and optimiser stepping on one fixed batch
  already in memory with a trivial loss (sum of squared embeddings): the compute floor.
  ``overhead`` = 1 - end-to-end / model-only is what the input pipeline and the loss cost.
* **reference** — the same model written the common way: a ``Dataset`` that opens each
  image file with PIL, decodes, resizes to the training size and applies a per-sample
  PIL random affine; a ``DataLoader`` (``--ref-workers``, default 0; with workers, they
  run only during the reference's own chunks and their start-up is counted); the reports
  tokenised on every step; fp32 NCHW; the InfoNCE computed with a Python loop over the
  batch. Image files are JPEGs of ``--file-size`` px (MIMIC-CXR-JPG originals are about
  2544 x 3056; 2048 is the default, 512 a typical downsampled copy).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np

from engine_common import PRESET, bench_inputs, machine, set_threads, write_json


def parse_size(text: str) -> tuple[int, int]:
    """``2048`` -> (2048, 2048); ``2544x3056`` -> (2544, 3056) (width x height)."""
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def write_jpegs(corpus, folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:06d}_{size[0]}x{size[1]}.jpg"
        if not path.is_file():
            Image.fromarray(np.asarray(corpus.images[i])).resize(size, Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


class ReferenceData:
    """The common way: one file per sample, decoded, resized and augmented with PIL."""

    def __init__(self, paths: list[Path], reports: list[str], size: int, seed: int = 0) -> None:
        self.paths, self.reports, self.size = paths, reports, size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        img = Image.open(self.paths[i]).convert("L").resize((self.size, self.size), Image.BILINEAR)
        angle = float(self.rng.uniform(-10, 10))
        shift = tuple(float(v) for v in self.rng.uniform(-0.05, 0.05, 2) * self.size)
        img = img.rotate(angle, resample=Image.BILINEAR, translate=shift)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
        return ((x - 0.5) / 0.25).unsqueeze(0), self.reports[i]


def loop_info_nce(img, txt, temperature: float, lam: float):
    """InfoNCE written per sample, as loss code often is."""
    import torch
    import torch.nn.functional as F

    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    losses = []
    for i in range(img.shape[0]):
        i2t = -F.log_softmax(img[i] @ txt.t() / temperature, dim=0)[i]
        t2i = -F.log_softmax(txt[i] @ img.t() / temperature, dim=0)[i]
        losses.append(lam * i2t + (1 - lam) * t2i)
    return torch.stack(losses).mean()


class Reference:
    def __init__(self, trainer, paths, batch: int, workers: int) -> None:
        import torch

        cfg = trainer.cfg
        self.model = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.tok, self.max_length = trainer.tokenizer, cfg.text_encoder.max_length
        self.temperature, self.lam = cfg.method.temperature, cfg.method.lambda_image_to_text
        reports = trainer.dataset.rows["report"].astype(str).tolist()[: len(paths)]
        data = ReferenceData(paths, reports, trainer.dataset.corpus.image_size[0])
        self.workers = workers
        extra = {"prefetch_factor": 1} if workers else {}  # least decoding in flight when a chunk ends
        self.loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers,
                                                  drop_last=True, collate_fn=self._collate, **extra)
        self.it = None  # started on first use (with workers: per chunk)

    @staticmethod
    def _collate(items):
        import torch

        return torch.stack([x for x, _ in items]), [t for _, t in items]

    def chunk(self, k: int) -> list[float]:
        """Seconds per step for ``k`` steps. With loader workers, they are started for the
        chunk and stopped after it, and the chunk's time counts from their start: workers
        left running would decode during the other measurements (taking their cores and
        handing this loop batches decoded on someone else's clock)."""
        if not self.workers:
            out = []
            for _ in range(k):
                t0 = time.perf_counter()
                self.step()
                out.append(time.perf_counter() - t0)
            return out
        t0 = time.perf_counter()
        self.it = iter(self.loader)
        for _ in range(k):
            self.step()
        del self.it
        self.it = None
        return [(time.perf_counter() - t0) / k] * k

    def step(self) -> float:
        import torch

        if self.it is None:
            self.it = iter(self.loader)
        try:
            images, texts = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            images, texts = next(self.it)
        enc = self.tok(texts, max_length=self.max_length, truncation=True, padding="max_length", return_tensors="pt")
        img = self.model.embed_images(images)
        txt = self.model.embed_texts(enc["input_ids"], enc["attention_mask"])
        loss = loop_info_nce(img, txt, self.temperature, self.lam)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return float(loss.detach())


class ModelOnly:
    def __init__(self, trainer) -> None:
        import torch

        self.model = copy.deepcopy(trainer.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        import torch

        gen = torch.Generator().manual_seed(0)
        self.batch = trainer._prepare(trainer.dataset.get_batch(trainer.plan.rows(0)[0]), gen)

    def step(self) -> None:
        self.model.train()
        b = self.batch
        if hasattr(self.model, "embed_images") and hasattr(self.model, "embed_texts"):
            loss = self.model.embed_images(b["images"]).pow(2).mean() + self.model.embed_texts(
                b["input_ids"], b["attention_mask"]).pow(2).mean()
        else:  # other objectives: their own loss, without the input pipeline
            loss = self.model(b)["loss"]
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="training image size (corpus)")
    p.add_argument("--n", type=int, default=1024, help="corpus pairs")
    p.add_argument("--file-size", default="2048", help="reference JPEG size: side, or WxH (MIMIC-CXR-JPG: about 2544x3056)")
    p.add_argument("--files", type=int, default=256, help="how many JPEG files the reference cycles through")
    p.add_argument("--ref-workers", type=int, default=0)
    p.add_argument("--rounds", type=int, default=6, help="alternations of the three measurements")
    p.add_argument("--chunk", type=int, default=3, help="steps of each kind per round")
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--work", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    set_threads(args.threads)

    from radpair.config import load_config
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    work, corpus, tok = bench_inputs(args.work, args.n, args.size)
    paths = write_jpegs(corpus, work / "jpeg", args.files, parse_size(args.file_size))

    warm = 2
    period = args.chunk + 1  # engine steps per round; the first after a hook is not counted
    total = warm + args.rounds * period
    cfg = load_config(PretrainConfig, PRESET, [
        f"data.corpus={corpus.root}", f"text_encoder.tokenizer={tok}", f"train.out_dir={work / 'run'}",
        "train.progress=false", "train.device=cpu", f"train.threads={args.threads}", "train.channels_last=true",
        f"train.max_steps={total}", f"train.checkpoint_every={args.checkpoint_every}", "train.log_every=1"])
    trainer = Trainer(cfg)
    model_only = ModelOnly(trainer)
    reference = Reference(trainer, paths, trainer.batch_size, args.ref_workers)
    for _ in range(2):  # warm both side paths (allocations, first-touch, lazy imports)
        model_only.step()
    reference.chunk(2)

    e2e, mo, ref = [], [], []
    state = {"last": None}

    def on_step(step: int, out: dict) -> None:
        now = time.perf_counter()
        # the step right after a hook found its batch already read and augmented during
        # the hook (the reader runs one step ahead), so its time would flatter the engine
        if state["last"] is not None and step > warm and (step - warm) % period != 1:
            e2e.append(now - state["last"])
        if step >= warm and (step - warm) % period == 0 and step < total:
            for _ in range(args.chunk):
                t0 = time.perf_counter()
                model_only.step()
                mo.append(time.perf_counter() - t0)
            ref.extend(reference.chunk(max(args.chunk, 4 * args.ref_workers)))
        state["last"] = time.perf_counter()  # the hook's own time is not the engine's

    trainer.on_step = on_step
    trainer.fit()
    b = trainer.batch_size
    rate = {k: b / statistics.median(v) for k, v in (("end_to_end", e2e), ("model_only", mo), ("reference", ref))}
    result = {
        "benchmark": "engine_pipeline",
        "machine": machine(),
        "config": {"preset": PRESET.name, "image_size": args.size, "batch": b, "file_size": args.file_size,
                   "ref_workers": args.ref_workers, "corpus_pairs": args.n, "steps": {"end_to_end": len(e2e),
                   "model_only": len(mo), "reference": len(ref)}},
        "images_per_s": rate,
        "step_s_median": {k: b / v for k, v in rate.items()},
        "overhead_vs_model_only": 1 - rate["end_to_end"] / rate["model_only"],
        "speedup_vs_reference": rate["end_to_end"] / rate["reference"],
    }
    write_json(result, args.json)


if __name__ == "__main__":
    main()
