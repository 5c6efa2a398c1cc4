"""Training-loader throughput: batches from the cache vs decoding JPEGs on every step.

    python benchmarks/loader_throughput.py --n 64 --batch 32 --size 256 [--json out.json]

Builds a 256 px cache from synthetic 2048 px JPEGs (see cache_build.py), then times, in
the training process itself:
  * ``cache``: a random batch read from the memory-mapped ``images.npy`` with one sorted
    fancy index, ``images_to_tensor`` and ``BatchAugment`` (default config);
  * ``cache_no_augment``: the same without augmentation;
  * ``decode``: the per-step alternative, open + decode + resize + pad each JPEG of the
    batch with Pillow (full decode), then the same tensor conversion and augmentation;
  * ``decode_draft``: the same with radpair's draft-mode reader.
Prints one JSON object; ``ratio`` is cache images/s over decode images/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine_common import write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _plain_decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    img = Image.open(path).convert("L")
    scale = size / max(img.size)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    out = np.zeros((size, size), np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = np.asarray(img.resize((w, h)))
    return out


def _rate(fn, steps: int, batch: int) -> float:
    fn(0)  # warm-up (first-touch page faults, lazy imports)
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        fn(s)
    return steps * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="number of synthetic JPEGs (and cached images)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cache-steps", type=int, default=60)
    ap.add_argument("--decode-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the model step would use the rest)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)

    from cache_build import make_jpegs

    from radpair.data.adapters import AdapterOptions, build_index
    from radpair.data.augment import AugmentConfig, BatchAugment
    from radpair.data.cache import CacheConfig, build_cache
    from radpair.data.corpus import Corpus
    from radpair.data.io import ResizeSpec, prepare_radiograph
    from radpair.data.tensors import images_to_tensor

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_jpegs(tmp / "jpg", args.n)
        pd.DataFrame({"file": [p.name for p in paths], "patient": [p.stem for p in paths]}).to_csv(tmp / "jpg" / "list.csv", index=False)
        index = build_index("generic_csv", tmp / "jpg", AdapterOptions(csv="list.csv", image_column="file", patient_column="patient"))
        build_cache(index, tmp / "cache", CacheConfig(ResizeSpec(args.size), workers=1, progress=False))
        corpus = Corpus.open(tmp / "cache")
        augment = BatchAugment(AugmentConfig())
        gen = torch.Generator().manual_seed(0)
        rng = np.random.default_rng(0)

        def from_cache(step: int, aug: bool = True) -> torch.Tensor:
            rows = np.sort(rng.choice(len(corpus), args.batch, replace=True))
            x = images_to_tensor(corpus.images[rows])
            return augment(x, gen) if aug else x

        def from_jpegs(step: int, draft: bool = False) -> torch.Tensor:
            rows = rng.choice(len(paths), args.batch, replace=True)
            if draft:
                arr = np.stack([prepare_radiograph(paths[r], ResizeSpec(args.size)) for r in rows])
            else:
                arr = np.stack([_plain_decode(paths[r], args.size) for r in rows])
            return augment(images_to_tensor(arr), gen)

        cache = _rate(from_cache, args.cache_steps, args.batch)
        cache_plain = _rate(lambda s: from_cache(s, aug=False), args.cache_steps, args.batch)
        decode = _rate(from_jpegs, args.decode_steps, args.batch)
        decode_draft = _rate(lambda s: from_jpegs(s, draft=True), args.decode_steps, args.batch)

    result = {
        "benchmark": "loader_throughput",
        "command": "python benchmarks/loader_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()}-vCPU {platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": round(load_before, 2),
        "batch": args.batch,
        "image_size": args.size,
        "source": "synthetic JPEG q95, 2048x2048 and 2048x2500",
        "cache_images_per_s": round(cache, 1),
        "cache_no_augment_images_per_s": round(cache_plain, 1),
        "decode_each_step_images_per_s": round(decode, 1),
        "decode_each_step_draft_images_per_s": round(decode_draft, 1),
        "ratio_cache_vs_decode": round(cache / decode, 1),
    }
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
