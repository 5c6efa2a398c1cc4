"""Shared pieces of the engine benchmarks (``benchmarks/engine_*.py``).

Every benchmark measures both sides of a ratio in the same process and run, repeating
them alternately and reporting medians, because the machine is shared and its speed
drifts by tens of percent from minute to minute.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

PRESET = REPO / "configs" / "convirt_cpu.yaml"


def set_threads(n: int) -> None:
    """Fix intra-op threads before torch starts its pool (and for OpenMP/MKL children).

    Also makes OpenMP threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE``) unless the
    caller chose a policy: with libgomp's default busy-waiting, a 2-core machine shared with
    other jobs ran the ConVIRT preset's step 5x slower (about 4 s instead of 0.8 s; see
    docs/training.md). It must be set before torch is first imported.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        print("warning: torch was imported before set_threads; OMP_WAIT_POLICY may not apply", file=sys.stderr)
    import torch

    torch.set_num_threads(n)


def _cpu_times() -> list[int] | None:
    """The aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    try:
        with open("/proc/stat") as fh:
            return [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None


_CPU_AT_START = _cpu_times()


def steal_share_since_start() -> float | None:
    """Share of CPU time the hypervisor gave to other guests since this benchmark started.

    On a shared VM this is the clearest sign that absolute rates are depressed: the
    development machine showed 4 % on a quiet hour and 30-38 % on a busy one.
    """
    now = _cpu_times()
    if now is None or _CPU_AT_START is None or len(now) < 8:
        return None
    delta = [a - b for a, b in zip(now, _CPU_AT_START)]
    return delta[7] / max(sum(delta[:8]), 1)


def machine() -> dict:
    import torch

    from radpair_train.runtime import cpu_model

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_steal_share": steal_share_since_start(),
    }


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 square matmul rate: the practical peak other figures are compared to."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def synthetic_corpus(root: Path, n: int, size: int, seed: int = 0, base: int | None = None):
    """A synthetic corpus of ``n`` pairs at ``size`` px, built once and reused.

    Uses the synthetic generator (``radpair.data.synth``) when it is installed; with
    ``base`` < ``n`` it generates ``base`` pairs and repeats them (new ids) up to ``n``,
    which keeps image bytes and report lengths realistic without hours of rendering.
    Falls back to noise images with report-like text when the generator is missing.
    """
    from radpair.data.corpus import Corpus

    root = Path(root)
    if (root / "meta.json").is_file():
        corpus = Corpus.open(root)
        if len(corpus) == n and corpus.image_size == (size, size):
            return corpus
    try:
        from radpair.data.synth import generate_corpus
    except ImportError:
        from radpair_train.testing import make_random_corpus

        return make_random_corpus(root, n=n, size=size, seed=seed)
    base = min(base or n, n)
    if base == n:
        return generate_corpus(root, n_images=n, size=size, seed=seed, workers=os.cpu_count() or 1)
    seed_corpus = generate_corpus(root.with_name(root.name + f"-base{base}"), n_images=base, size=size, seed=seed,
                                  workers=os.cpu_count() or 1)
    return _repeat(seed_corpus, root, n)


def _repeat(src, root: Path, n: int):
    import numpy as np
    import pandas as pd

    from radpair.data.corpus import CorpusWriter

    base = len(src)
    writer = CorpusWriter(root, n, *src.image_size)
    for start in range(0, n, base):
        stop = min(n, start + base)
        writer.images[start:stop] = src.images[: stop - start]
    reps = []
    for k, start in enumerate(range(0, n, base)):
        part = src.index.iloc[: min(base, n - start)].copy()
        part["image_index"] = np.arange(start, start + len(part))
        for col in ("image_id", "patient_id", "study_id"):
            part[col] = part[col].astype(str) + f"-r{k}"
        part["split"] = "train"
        reps.append(part)
    index = pd.concat(reps, ignore_index=True)
    truth = None
    if src.ground_truth is not None:
        gt = []
        for k in range(len(reps)):
            g = src.ground_truth.copy()
            g["image_id"] = g["image_id"].astype(str) + f"-r{k}"
            gt.append(g)
        truth = pd.concat(gt, ignore_index=True)
        truth = truth[truth["image_id"].isin(set(index["image_id"]))]
    meta = {k: v for k, v in src.meta.items() if k not in ("format", "version", "n_images", "image_size", "dtype")}
    meta["repeated_from"] = str(src.root)
    return writer.finalize(index, meta, label_columns=src.label_columns, ground_truth=truth)


def alternating_run_parser(doc: str, threads_help: str = "intra-op threads"):
    """The arguments every alternating-runs benchmark takes: threads, image size, timed
    steps per run, rounds of alternation, a work folder to reuse, a JSON output path."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help=threads_help)
    p.add_argument("--size", type=int, default=128, help="corpus image size")
    p.add_argument("--steps", type=int, default=12, help="timed steps per run")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the compared runs")
    p.add_argument("--work", default=None, help="folder for the corpus (kept between runs)")
    p.add_argument("--json", default=None)
    return p


def bench_inputs(work: str | None, n: int, size: int):
    """(work folder, synthetic corpus of ``n`` pairs at ``size`` px, tokenizer folder), reused
    between runs when ``work`` is given, else in a new temporary folder."""
    import tempfile

    folder = Path(work or tempfile.mkdtemp(prefix="radpair-bench-"))
    corpus = synthetic_corpus(folder / f"corpus-{size}", n, size)
    tok = folder / "tokenizer"
    tokenizer_for(corpus, tok)
    return folder, corpus, tok


def tokenizer_for(corpus, out: Path, vocab_size: int = 2000):
    from radpair.text import load_tokenizer, train_wordpiece_tokenizer

    out = Path(out)
    if (out / "tokenizer.json").is_file():
        return load_tokenizer(out)
    texts = corpus.index["report"].astype(str).tolist()[:20000]
    return train_wordpiece_tokenizer(texts, out, vocab_size=vocab_size)


def write_json(result: dict, path: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
