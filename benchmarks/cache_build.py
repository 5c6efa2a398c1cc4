"""Cache build throughput on 2048 px JPEGs vs a plain decode-then-resize loop.

    python benchmarks/cache_build.py --n 96 --size 256 --workers 2 [--json out.json]

Generates synthetic radiograph-like JPEGs (2048 x 2048 and 2048 x 2500, quality 95) in a
temporary folder, then times
  * ``plain``: one process, ``Image.open -> convert("L") -> resize (box) -> pad``, the
    loop most projects start with;
  * ``cache_1``: ``build_cache`` with one in-process worker (draft decoding only);
  * ``cache_W``: ``build_cache`` with W worker processes (draft + parallel), end to end
    (index, decode, assembly, files written).
Prints one JSON object; ``ratio`` is cache_W images/s over plain images/s (wall clock),
``cpu_ratio`` the same in CPU time (insensitive to other jobs on a shared machine), and
``cores_used`` how much parallelism the workers actually got.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from engine_common import write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def synthetic_radiograph(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth 'thorax' + ribs-like stripes + noise: compresses like a real film, not like noise."""
    rng = np.random.default_rng(seed)
    small_h, small_w = h // 16, w // 16
    y, x = np.mgrid[0:small_h, 0:small_w]
    body = np.exp(-(((y - small_h / 2) / (small_h / 2.2)) ** 2 + ((x - small_w / 2) / (small_w / 2.6)) ** 2) * 2)
    lungs = np.exp(-(((y - small_h / 2.2) / (small_h / 4)) ** 2 + ((np.abs(x - small_w / 2) - small_w / 5) / (small_w / 8)) ** 2) * 2)
    base = 0.25 + 0.6 * body - 0.35 * lungs + 0.05 * rng.standard_normal((small_h, small_w))
    big = np.asarray(Image.fromarray(base.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BICUBIC))
    ribs = 0.04 * np.sin(np.arange(h)[:, None] / h * 60 + seed)
    img = (big + ribs + 0.02 * rng.standard_normal((h, w))).clip(0, 1)
    return (img * 255).astype(np.uint8)


def make_jpegs(folder: Path, n: int, side: int = 2048) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    templates = [synthetic_radiograph(side, side, 0), synthetic_radiograph(int(side * 1.22), side, 1)]
    for i in range(n):
        arr = np.roll(templates[i % 2], shift=(i * 37) % 200, axis=1)  # distinct files, same statistics
        path = folder / f"img{i:05d}.jpg"
        Image.fromarray(arr).save(path, quality=95)
        paths.append(path)
    return paths


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (worker processes)."""
    own = time.process_time()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + kids.ru_utime + kids.ru_stime


def plain_loop(paths: list[Path], size: int) -> float:
    """Images/s of the naive loop (full decode, box resize, pad), one process."""
    t0 = time.perf_counter()
    out = np.zeros((len(paths), size, size), np.uint8)
    for i, p in enumerate(paths):
        img = Image.open(p).convert("L")
        scale = size / max(img.size)
        w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        arr = np.asarray(img.resize((w, h), Image.Resampling.BOX))
        top, left = (size - h) // 2, (size - w) // 2
        out[i, top : top + h, left : left + w] = arr
    return len(paths) / (time.perf_counter() - t0)


def cache_build(folder: Path, out: Path, size: int, workers: int) -> tuple[float, float]:
    import pandas as pd

    from radpair.data.adapters import AdapterOptions, build_index
    from radpair.data.cache import CacheConfig, build_cache
    from radpair.data.io import ResizeSpec

    files = sorted(p.name for p in folder.glob("*.jpg"))
    pd.DataFrame({"file": files, "patient": [f"P{i}" for i in range(len(files))]}).to_csv(folder / "list.csv", index=False)
    t0 = time.perf_counter()
    index = build_index("generic_csv", folder, AdapterOptions(csv="list.csv", image_column="file", patient_column="patient"))
    report = build_cache(index, out, CacheConfig(ResizeSpec(size), chunk_size=16, workers=workers, progress=False))
    total = time.perf_counter() - t0
    assert report.complete and report.n_written == len(files)
    return len(files) / total, total


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96, help="number of synthetic JPEGs")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = make_jpegs(tmp / "jpg", args.n)
        gen_s = time.perf_counter() - t0
        c0 = _cpu_seconds()
        plain = plain_loop(paths, args.size)
        c1 = _cpu_seconds()
        one, _ = cache_build(tmp / "jpg", tmp / "cache1", args.size, 1)
        c2 = _cpu_seconds()
        many, total = cache_build(tmp / "jpg", tmp / "cacheW", args.size, args.workers)
        c3 = _cpu_seconds()
        same = np.array_equal(np.load(tmp / "cache1" / "images.npy"), np.load(tmp / "cacheW" / "images.npy"))
    result = {
        "benchmark": "cache_build",
        "command": "python benchmarks/cache_build.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()}-vCPU {platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "load_average_at_start": round(load_before, 2),
        "n_images": args.n,
        "source": "synthetic JPEG q95, 2048x2048 and 2048x2500",
        "output_size": args.size,
        "plain_loop_images_per_s": round(plain, 1),
        "cache_1_worker_images_per_s": round(one, 1),
        f"cache_{args.workers}_workers_images_per_s": round(many, 1),
        "cache_end_to_end_s": round(total, 2),
        "ratio_cache_vs_plain": round(many / plain, 2),
        "ratio_draft_only_vs_plain": round(one / plain, 2),
        "cpu_ms_per_image_plain": round((c1 - c0) / args.n * 1e3, 1),
        "cpu_ms_per_image_cache_1_worker": round((c2 - c1) / args.n * 1e3, 1),
        f"cpu_ms_per_image_cache_{args.workers}_workers": round((c3 - c2) / args.n * 1e3, 1),
        "cpu_ratio_plain_vs_cache": round((c1 - c0) / max(c3 - c2, 1e-9), 2),
        f"cores_used_by_cache_{args.workers}_workers": round((c3 - c2) / total, 2),
        "worker_count_does_not_change_bytes": bool(same),
        "fixture_generation_s": round(gen_s, 1),
    }
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
