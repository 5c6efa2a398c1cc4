"""The preprocessing cache: decode every radiograph once, store a memory-mapped corpus.

Decoding a 3000x3000 JPEG or DICOM costs ~30 ms; doing it on every training step makes
the loader the bottleneck. ``build_cache`` converts a :class:`DatasetIndex` into the
corpus format of :mod:`radpair.data.corpus` (``images.npy`` + ``index.csv`` +
``meta.json`` last), plus ``skipped.csv`` (every file that could not be decoded, with the
reason), ``sources.csv`` (image_index -> source file) and ``split_manifest.csv``.

Work is cut into fixed chunks of the planned image list. A worker process decodes a chunk
into its own file under ``OUT/.radpair-work/`` (atomic rename); the parent then writes the
chunk's status file, which marks it done. A run killed at any moment leaves only whole
chunks behind; a rerun with the same inputs skips them and finishes. The final assembly reads
chunks in order and is deterministic, so the result is byte-identical to an uninterrupted
run. ``shard=(i, n)`` processes only chunks ``c % n == i`` (one machine each);
:func:`merge_shards` assembles the cache from the shard folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radpair import __version__
from radpair.data.adapters.base import RECORD_COLUMNS
from radpair.data.adapters.build import DatasetIndex
from radpair.data.adapters.splits import split_manifest
from radpair.data.corpus import (
    INDEX_COLUMNS,
    META_FILE,
    Corpus,
    CorpusWriter,
    atomic_write_csv,
    atomic_write_text,
)
from radpair.data.io import NormalisationSpec, OutputDType, ResizeSpec
from radpair.data.io.batch import DecodeJob, decode_to_npy, fsync_file
from radpair.errors import ConfigError, DataError

WORK_DIR = ".radpair-work"
PLAN_CSV, PLAN_JSON = "plan.csv", "plan.json"
SKIPPED_FILE, SOURCES_FILE, MANIFEST_FILE = "skipped.csv", "sources.csv", "split_manifest.csv"
OUTPUT_FILES = [META_FILE, "images.npy", "index.csv", SKIPPED_FILE, SOURCES_FILE, MANIFEST_FILE]
SKIPPED_COLUMNS = ["image_id", "patient_id", "study_id", "path", "reason"]


@dataclass(frozen=True)
class CacheConfig:
    """How to build a cache. Only ``resize``, ``normalisation`` and ``chunk_size`` change
    the result; the rest decides how the work is run."""

    resize: ResizeSpec
    normalisation: NormalisationSpec = field(default_factory=NormalisationSpec)
    chunk_size: int = 256
    workers: int = 0  # 0: one per CPU core; 1: decode in this process
    shard: tuple[int, int] = (0, 1)
    progress: bool = True
    keep_work: bool = False
    overwrite: bool = False
    start_method: str = "spawn"  # safe next to torch/threads in the parent

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"chunk size must be >= 1, got {self.chunk_size}")
        i, n = self.shard
        if n < 1 or not 0 <= i < n:
            raise ConfigError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.normalisation.dtype is not OutputDType.UINT8:
            raise ConfigError(
                "the cache stores uint8 images (what training reads); 16-bit output is available "
                "from radpair.data.io.read_radiograph with NormalisationSpec(dtype='uint16')"
            )

    @property
    def n_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)


@dataclass
class CacheReport:
    """What a build or merge did; ``complete`` is False for a shard that still needs merging."""

    out: Path
    complete: bool
    n_planned: int
    n_written: int = 0
    n_skipped: int = 0
    chunks_total: int = 0
    chunks_done_now: int = 0
    chunks_reused: int = 0
    images_decoded_now: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def parse_shard(text: str) -> tuple[int, int]:
    """'1/4' -> (1, 4); shards are numbered from 0."""
    try:
        i, n = (int(p) for p in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= i < n (shards are numbered 0..n-1)")
    return i, n


# ------------------------------------------------------------------ plan (what to do)


def csv_labels(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Label columns as written to CSV: "1" / "0" / "-1" / "" where every value is an
    integer, else float64. Integer labels become a categorical of their few distinct
    strings, which keeps 400k x 14 labels at a few MB and writes fast."""
    out = frame.copy()
    for col in columns:
        values = pd.to_numeric(out[col], errors="coerce").astype(np.float64)
        finite = values.dropna()
        if (finite == np.round(finite)).all():
            codes = sorted(set(finite.astype(np.int64).tolist()))
            strings = values.map({float(v): str(v) for v in codes})
            out[col] = pd.Categorical(strings, categories=[str(v) for v in codes])
        else:
            out[col] = values
    return out


def plan_table(index: DatasetIndex) -> pd.DataFrame:
    table = index.table[RECORD_COLUMNS + list(index.label_columns)]
    return csv_labels(table, list(index.label_columns))


def _settings(config: CacheConfig) -> dict[str, Any]:
    return {
        "resize": config.resize.to_dict(),
        "normalisation": config.normalisation.to_dict(),
        "chunk_size": int(config.chunk_size),
    }


def write_plan_csv(table: pd.DataFrame, path: Path) -> str:
    """Write the plan rows and return the SHA-256 of the file (streamed, not held in memory)."""
    table.to_csv(path, index=False)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
        os.fsync(fh.fileno())
    return h.hexdigest()


def fingerprint(plan_digest: str, settings: dict[str, Any], source: dict[str, Any]) -> str:
    """Identity of the work: plan rows, output settings and adapter choices, not the
    machine-specific root paths (shards may mount the data at different places)."""
    portable = {k: v for k, v in source.items() if k not in ("root", "image_root")}
    h = hashlib.sha256()
    h.update(plan_digest.encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(json.dumps(portable, sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclass
class Plan:
    work: Path
    fingerprint: str
    settings: dict[str, Any]
    source: dict[str, Any]
    label_columns: list[str]
    image_root: Path
    n_records: int

    @property
    def chunk_size(self) -> int:
        return int(self.settings["chunk_size"])

    @property
    def n_chunks(self) -> int:
        return (self.n_records + self.chunk_size - 1) // self.chunk_size

    def to_json(self) -> str:
        return json.dumps(
            {
                "fingerprint": self.fingerprint,
                "settings": self.settings,
                "source": self.source,
                "label_columns": self.label_columns,
                "image_root": str(self.image_root),
                "n_records": self.n_records,
                "radpair_version": __version__,
            },
            indent=2,
            sort_keys=True,
            default=str,
        )

    @classmethod
    def load(cls, work: Path) -> Plan:
        data = json.loads((work / PLAN_JSON).read_text())
        return cls(
            work,
            data["fingerprint"],
            data["settings"],
            data["source"],
            list(data["label_columns"]),
            Path(data["image_root"]),
            int(data["n_records"]),
        )

    def read_table(self) -> pd.DataFrame:
        dtypes = {c: str for c in RECORD_COLUMNS}
        table = pd.read_csv(self.work / PLAN_CSV, dtype=dtypes, keep_default_na=False, na_values={c: [""] for c in self.label_columns})
        return csv_labels(table, self.label_columns)


# ------------------------------------------------------------------ chunks (the work)


@dataclass(frozen=True)
class ChunkTask:
    """One chunk of the plan: positions ``start .. start + len(job.paths)``."""

    chunk: int
    start: int
    job: DecodeJob


def chunk_paths(work: Path, chunk: int) -> tuple[Path, Path]:
    return work / f"chunk_{chunk:06d}.npy", work / f"chunk_{chunk:06d}.json"


def commit_chunk(work: Path, task: ChunkTask, failures: list[list], fp: str) -> dict[str, Any]:
    """Write the chunk's status file (atomically, after its stack): the chunk is now done."""
    _, status_path = chunk_paths(work, task.chunk)
    status = {"chunk": task.chunk, "start": task.start, "count": len(task.job.paths), "skipped": failures, "fingerprint": fp}
    tmp = status_path.with_name(f"{status_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status))
    fsync_file(tmp)
    os.replace(tmp, status_path)
    return status


def read_status(work: Path, chunk: int, fp: str, expect: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """The committed status of a chunk, or None if it is absent, stale or damaged."""
    npy, status_path = chunk_paths(work, chunk)
    if not status_path.is_file() or not npy.is_file():
        return None
    try:
        status = json.loads(status_path.read_text())
    except (json.JSONDecodeError, OSError):
        return None
    if status.get("fingerprint") != fp:
        return None
    if expect is not None and (status.get("start"), status.get("count")) != expect:
        return None
    try:
        arr = np.load(npy, mmap_mode="r")
    except (ValueError, OSError):
        return None
    if arr.shape[0] != status["count"]:
        return None
    return status


# ------------------------------------------------------------------ running


def _progress(enabled: bool):
    from radpair.progress import count_progress

    return count_progress("{task.description}", enabled=enabled)


def _run_tasks(tasks: list[ChunkTask], config: CacheConfig, work: Path, fp: str, total_images: int, done_images: int) -> None:
    """Decode chunks in worker processes; the parent commits each finished one."""
    progress = _progress(config.progress)
    with progress:
        bar = progress.add_task("decoding", total=total_images, completed=done_images)

        def finished(task: ChunkTask, failures: list[list]) -> None:
            status = commit_chunk(work, task, failures, fp)
            _chunk_committed(status)
            progress.advance(bar, status["count"])

        workers = min(config.n_workers, len(tasks))
        if workers <= 1:
            for task in tasks:
                finished(task, decode_to_npy(task.job))
            return
        import multiprocessing

        ctx = multiprocessing.get_context(config.start_method)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(decode_to_npy, t.job): t for t in tasks}
            try:
                for fut in as_completed(futures):
                    task = futures[fut]
                    try:
                        failures = fut.result()
                    except Exception as exc:
                        raise DataError(
                            f"worker failed on chunk {task.chunk} (files {task.job.paths[0]} ...): {type(exc).__name__}: {exc}; "
                            "finished chunks are kept, rerun the same command to resume"
                        ) from exc
                    finished(task, failures)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


def _check_out_dir(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    ours = set(OUTPUT_FILES) | {WORK_DIR}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.endswith(".tmp"))
    if foreign:
        raise DataError(f"{out} already holds other files ({', '.join(foreign[:5])}); choose an empty or new --out folder")


def _discard(out: Path) -> None:
    """Remove a previous cache or unfinished work in ``out`` (meta first: unfinished)."""
    for name in OUTPUT_FILES:
        if (out / name).exists():
            (out / name).unlink()
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)


def _prepare_work(out: Path, index: DatasetIndex, config: CacheConfig) -> tuple[Plan, bool]:
    """Create or reopen the plan; returns (plan, already_complete)."""
    settings = _settings(config)
    source = index.describe()
    work = out / WORK_DIR
    tmp_csv = out / f".plan.{os.getpid()}.tmp"
    try:
        fp = fingerprint(write_plan_csv(plan_table(index), tmp_csv), settings, source)
        plan = Plan(work, fp, settings, source, list(index.label_columns), index.image_root.resolve(), len(index.table))
        meta_path = out / META_FILE
        if meta_path.is_file() and not config.overwrite:
            meta = json.loads(meta_path.read_text())
            if meta.get("preprocess", {}).get("fingerprint") != fp:
                raise DataError(f"{out} already holds a cache built from other data or settings; pass --overwrite to replace it")
            shutil.rmtree(work, ignore_errors=True)  # a kill after finalising left it behind
            return plan, True
        if config.overwrite:
            _discard(out)
        if (work / PLAN_JSON).is_file():
            old = Plan.load(work)
            if old.fingerprint != fp:
                raise DataError(
                    f"{out} holds an unfinished cache from other data or settings (plan {old.fingerprint[:12]}, now {fp[:12]}); "
                    "rerun with the original options to resume, or pass --overwrite to start again"
                )
            return plan, False
        shutil.rmtree(work, ignore_errors=True)  # no committed plan: anything here is debris
        work.mkdir(parents=True)
        os.replace(tmp_csv, work / PLAN_CSV)
        atomic_write_text(work / PLAN_JSON, plan.to_json())  # the plan is committed from here on
        return plan, False
    finally:
        tmp_csv.unlink(missing_ok=True)


def build_cache(index: DatasetIndex, out: str | Path, config: CacheConfig) -> CacheReport:
    """Decode ``index`` into a cache at ``out`` (resuming unfinished work; see module doc)."""
    t0 = time.perf_counter()
    out = Path(out)
    if not config.overwrite:
        _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    plan, complete = _prepare_work(out, index, config)
    if complete:
        corpus = Corpus.open(out)
        return CacheReport(out, True, plan.n_records, len(corpus), int(corpus.meta["preprocess"]["n_skipped"]),
                           plan.n_chunks, 0, plan.n_chunks, notes=["cache already complete; nothing to do"])

    table = plan.read_table()
    shard_i, shard_n = config.shard
    mine = [c for c in range(plan.n_chunks) if c % shard_n == shard_i]
    tasks, reused, done_images = [], 0, 0
    for c in mine:
        start = c * plan.chunk_size
        stop = min(start + plan.chunk_size, plan.n_records)
        if read_status(plan.work, c, plan.fingerprint, (start, stop - start)) is not None:
            reused += 1
            done_images += stop - start
            continue
        paths = tuple(str(plan.image_root / p) for p in table["path"].iloc[start:stop])
        job = DecodeJob(paths, str(chunk_paths(plan.work, c)[0]), config.resize, config.normalisation)
        tasks.append(ChunkTask(c, start, job))
    my_images = sum(min(plan.chunk_size, plan.n_records - c * plan.chunk_size) for c in mine)
    if tasks:
        _run_tasks(tasks, config, plan.work, plan.fingerprint, my_images, done_images)
    report = CacheReport(out, False, plan.n_records, chunks_total=plan.n_chunks, chunks_done_now=len(tasks), chunks_reused=reused,
                         images_decoded_now=sum(len(t.job.paths) for t in tasks))
    if shard_n > 1:
        report.notes.append(
            f"shard {shard_i}/{shard_n}: {len(mine)} of {plan.n_chunks} chunks done; when every shard has finished, "
            f"run `radpair preprocess --merge SHARD_DIR ... --out FINAL_DIR`"
        )
        report.seconds = time.perf_counter() - t0
        return report
    final = assemble(out, [plan.work], config.keep_work)
    final.chunks_done_now, final.chunks_reused, final.seconds = len(tasks), reused, time.perf_counter() - t0
    final.images_decoded_now = sum(len(t.job.paths) for t in tasks)
    return final


def _chunk_committed(status: dict[str, Any]) -> None:
    """Called in the parent after each committed chunk (a seam for tests and logging)."""


# ------------------------------------------------------------------ assembly


def _collect(plan: Plan, works: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    found: list[tuple[Path, dict[str, Any]]] = []
    missing = []
    for c in range(plan.n_chunks):
        start = c * plan.chunk_size
        expect = (start, min(plan.chunk_size, plan.n_records - start))
        for work in works:
            status = read_status(work, c, plan.fingerprint, expect)
            if status is not None:
                found.append((work, status))
                break
        else:
            missing.append(c)
    if missing:
        raise DataError(
            f"{len(missing)} of {plan.n_chunks} chunks are not finished (e.g. {missing[:8]}); "
            "run the missing shards (chunk c belongs to shard c % n) or rerun preprocess to resume"
        )
    return found


def assemble(out: Path, works: list[Path], keep_work: bool = False) -> CacheReport:
    """Write the final corpus from committed chunks (deterministic, restartable)."""
    plan = Plan.load(works[0])
    for other in works[1:]:
        fp = Plan.load(other).fingerprint
        if fp != plan.fingerprint:
            raise DataError(f"{other}: shard was planned from other data or settings ({fp[:12]} vs {plan.fingerprint[:12]})")
    chunks = _collect(plan, works)
    table = plan.read_table()
    ok = np.ones(plan.n_records, dtype=bool)
    reasons = np.full(plan.n_records, "", dtype=object)
    for _, status in chunks:
        for j, reason in status["skipped"]:
            ok[status["start"] + j] = False
            reasons[status["start"] + j] = reason
    n_ok = int(ok.sum())
    if n_ok == 0:
        first = Counter(r for r in reasons if r).most_common(3)
        raise DataError(f"none of the {plan.n_records} images could be decoded; most common reasons: {first}")

    resize = ResizeSpec(**plan.settings["resize"])
    writer = CorpusWriter(out, n_ok, resize.size, resize.size)
    k = 0
    for work, status in chunks:
        local_ok = ok[status["start"] : status["start"] + status["count"]]
        if local_ok.any():
            arr = np.load(chunk_paths(work, status["chunk"])[0], mmap_mode="r")
            m = int(local_ok.sum())
            writer.images[k : k + m] = arr[local_ok]
            k += m
            del arr

    kept = table.loc[ok].reset_index(drop=True)
    index = kept[INDEX_COLUMNS[1:]].copy()
    index.insert(0, "image_index", np.arange(n_ok))
    for col in plan.label_columns:
        index[col] = kept[col].array
    skipped = table.loc[~ok, ["image_id", "patient_id", "study_id", "path"]].copy()
    skipped["path"] = [str(plan.image_root / p) for p in skipped["path"]]
    skipped["reason"] = reasons[~ok]
    atomic_write_csv(skipped[SKIPPED_COLUMNS].reset_index(drop=True), out / SKIPPED_FILE)
    atomic_write_csv(pd.DataFrame({"image_index": index["image_index"], "image_id": index["image_id"], "path": kept["path"]}), out / SOURCES_FILE)
    atomic_write_csv(split_manifest(kept), out / MANIFEST_FILE)

    reason_counts = Counter(_reason_kind(r) for r in reasons[~ok])
    meta = {
        "normalisation": plan.settings["normalisation"],
        "preprocess": {
            "resize": plan.settings["resize"],
            "chunk_size": plan.chunk_size,
            "fingerprint": plan.fingerprint,
            "n_planned": plan.n_records,
            "n_skipped": int((~ok).sum()),
            "radpair_version": __version__,
        },
        "source": plan.source,
        "split": plan.source.get("split", {}),
    }
    writer.finalize(index, meta, label_columns=plan.label_columns)
    if not keep_work:
        shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    return CacheReport(out, True, plan.n_records, n_ok, int((~ok).sum()), plan.n_chunks, skip_reasons=dict(reason_counts))


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary ('truncated or corrupt image data (...)' -> first words)."""
    return reason.split(" (")[0]


def merge_shards(out: str | Path, shard_dirs: list[str | Path], keep_work: bool = False) -> CacheReport:
    """Assemble a cache in ``out`` from shard folders that each ran ``--shard i/n``."""
    t0 = time.perf_counter()
    out = Path(out)
    works = []
    for d in shard_dirs:
        work = Path(d) / WORK_DIR
        if not (work / PLAN_JSON).is_file():
            raise DataError(f"{d}: no {WORK_DIR}/{PLAN_JSON}; is this the --out folder of a `--shard i/n` run?")
        works.append(work)
    out_work = out / WORK_DIR
    if (out_work / PLAN_JSON).is_file() and out_work.resolve() not in {w.resolve() for w in works}:
        works.insert(0, out_work)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    report = assemble(out, works, keep_work=True)
    if not keep_work:
        shutil.rmtree(out_work, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    report.notes.append("shard folders were left in place; delete them once the merged cache is checked")
    return report
