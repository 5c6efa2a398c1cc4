"""Build a synthetic radiograph-report corpus on disk.

Order of work: check the output folder, plan the cohort (patients -> studies -> images,
exactly ``n_images`` rows), write every study's report, assign patient-level splits,
then render images in a process pool and write them straight into the corpus memmap
from the parent. Everything random is keyed by (seed, patient, stream, ...), never by
worker or chunk, so the bytes do not depend on ``workers``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from radpair.config import to_dict
from radpair.data.corpus import Corpus, CorpusWriter
from radpair.data.synth.agreement import measure_agreement
from radpair.data.synth.anatomy import Anatomy
from radpair.data.synth.cohort import STREAM_REPORT, STREAM_SPLIT, PatientPlan, StudyPlan, sample_patient
from radpair.data.synth.config import DIFFICULTIES, SynthConfig
from radpair.data.synth.findings import FINDINGS, Findings
from radpair.data.synth.masks import CHANNEL_LABEL, CHANNELS, MaskWriter, RegionRecorder, pack, remove_masks
from radpair.data.synth.render import MAX_SIZE, MIN_SIZE, image_distractors, is_sick, render_image
from radpair.data.synth.reports import Report, write_report
from radpair.errors import ConfigError

GENERATOR_VERSION = 2
"""1: first release. 2: ECG leads / oxygen tubing drawn from their own streams and, by
default, independent of illness (``SynthConfig.distractor_illness_link``), listed in the
``distractors`` column of ``ground_truth.csv``; pneumothorax invisible at conspicuity 0."""
SPLITS = ("train", "validate", "test")
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ImageJob:
    """Everything a worker needs to render one row."""

    row: int
    anatomy: Anatomy
    findings: Findings
    view: str
    seed: tuple[int, ...]
    detail_seed: tuple[int, ...]
    sick: bool
    distractors: tuple[str, ...] | None = None  # None: render_image chooses them from the seed


def check_output_dir(out_dir: str | Path, n_images: int = 0, size: int = 0, bytes_per_pixel: float = 1.0) -> Path:
    """Fail before any work if ``out_dir`` cannot hold the corpus (names the folder).

    ``bytes_per_pixel``: 1 for the images alone; masks add one bit per pixel and channel.
    """
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output folder {str(path)!r} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output folder {str(path)!r}: {exc.strerror or exc}") from None
    probe = path / f".radpair-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output folder {str(path)!r} is not writable: {exc.strerror or exc}") from None
    need = int(n_images * size * size * bytes_per_pixel)
    if need:
        free = shutil.disk_usage(path).free
        if need > free:
            raise ConfigError(f"output folder {str(path)!r} has {free / 2**20:.0f} MiB free; "
                              f"{n_images} images of {size}x{size} px need {need / 2**20:.0f} MiB")
    return path


def _validate(n_images: int, size: int, seed: int, workers: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"image size must be an integer between {MIN_SIZE} and {MAX_SIZE} px, got {size!r}")
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ConfigError(f"n_images must be a positive integer, got {n_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")


def plan_cohort(n_images: int, seed: int, cfg: SynthConfig) -> list[PatientPlan]:
    """Sample patients in order until there are exactly ``n_images`` images.

    The last patient's last study loses images (or whole studies) to hit the count.
    """
    patients: list[PatientPlan] = []
    total = 0
    number = 0
    while total < n_images:
        p = sample_patient(seed, number, cfg)
        number += 1
        if total + p.n_images > n_images:
            keep = n_images - total
            studies = []
            for st in p.studies:
                if keep <= 0:
                    break
                views = st.views[:keep]
                keep -= len(views)
                studies.append(dataclasses.replace(st, views=views))
            p = dataclasses.replace(p, studies=tuple(studies))
        patients.append(p)
        total += p.n_images
    return patients


def assign_splits(n_patients: int, seed: int, fractions: list[float]) -> list[str]:
    """Patient-level split, deterministic from the seed; every non-empty fraction gets a patient."""
    rng = np.random.default_rng([seed, STREAM_SPLIT])
    order = rng.permutation(n_patients)
    counts = [int(round(f * n_patients)) for f in fractions]
    for i, f in enumerate(fractions):  # small corpora: keep validate/test non-empty when possible
        if f > 0 and counts[i] == 0 and n_patients >= len(fractions):
            counts[i] = 1
    while sum(counts) > n_patients:
        counts[int(np.argmax(counts))] -= 1
    counts[0] += n_patients - sum(counts)
    labels = np.empty(n_patients, dtype=object)
    start = 0
    for name, k in zip(SPLITS, counts):
        labels[order[start:start + k]] = name
        start += k
    return list(labels)


@dataclass
class RenderedChunk:
    """A worker's rows: images, and (with masks) their packed regions and the findings the
    ground truth has but the view did not draw (channel -> rows)."""

    start: int
    images: np.ndarray
    masks: np.ndarray | None = None
    present: np.ndarray | None = None
    not_drawn: dict[str, list[int]] | None = None


def _render_chunk(payload: tuple) -> RenderedChunk:
    size, cfg, jobs = payload[:3]
    with_masks = len(payload) > 3 and bool(payload[3])
    out = np.empty((len(jobs), size, size), dtype=np.uint8)
    packed = np.empty((len(jobs), len(CHANNELS), size, (size + 7) // 8), dtype=np.uint8) if with_masks else None
    present = np.zeros((len(jobs), len(CHANNELS)), dtype=bool)
    not_drawn: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        regions = RegionRecorder(size) if with_masks else None
        out[i] = render_image(job.anatomy, job.findings, job.view, size, seed=job.seed, detail_seed=job.detail_seed,
                              config=cfg, sick=job.sick, distractors=job.distractors, regions=regions)
        if regions is not None:
            drawn = regions.masks()
            packed[i] = pack(drawn, size)
            labels = job.findings.labels()
            for k, name in enumerate(CHANNELS):
                present[i, k] = name in drawn and bool(drawn[name].any())
                if labels.get(CHANNEL_LABEL[name], 0) and not present[i, k]:
                    not_drawn.setdefault(name, []).append(job.row)
    if not with_masks:
        return RenderedChunk(jobs[0].row, out)
    return RenderedChunk(jobs[0].row, out, packed, present, not_drawn)


def _pool_context():
    """fork where it is the platform default (fast start); spawn elsewhere."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _difficulty_name(cfg: SynthConfig) -> str:
    for name in DIFFICULTIES:
        if to_dict(SynthConfig.preset(name)) == to_dict(cfg):
            return name
    return "custom"


def _nullable(values: list[int | None]) -> pd.Series:
    return pd.Series(pd.array(values, dtype="Int64"))


def _image_jobs(patients: list[PatientPlan], seed: int, cfg: SynthConfig | None = None) -> list[ImageJob]:
    """One render job per row, in row order (patient, study, image), with the ECG leads /
    oxygen tubing each image will show (chosen here so the truth table can list them)."""
    cfg = cfg if cfg is not None else SynthConfig()
    jobs = []
    for p in patients:
        for st in p.studies:
            f = st.findings
            sick = is_sick(f, st.setting)
            for k, view in enumerate(st.views):
                image_seed = (seed, p.number, 1000 + st.index, 1 + k)
                jobs.append(ImageJob(len(jobs), p.anatomy, f, view, image_seed, (seed, p.number, 1000 + st.index),
                                     sick, image_distractors(view, cfg, sick, image_seed)))
    return jobs


def _write_reports(patients: list[PatientPlan], seed: int, cfg: SynthConfig) -> dict[str, Report]:
    reports: dict[str, Report] = {}
    for p in patients:
        prior: StudyPlan | None = None
        for st in p.studies:
            rng = np.random.default_rng([seed, p.number, STREAM_REPORT, st.index])
            reports[st.study_id] = write_report(p, st, prior, rng, cfg)
            prior = st
    return reports


def _tables(patients: list[PatientPlan], reports: dict[str, Report], splits: list[str],
            jobs: list[ImageJob]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The index (with the labels the reports state) and the ground-truth table."""
    idx_rows, gt_rows = [], []
    row = 0
    for p, split in zip(patients, splits):
        prior_id = ""
        for st in p.studies:
            rep = reports[st.study_id]
            f = st.findings
            labels = f.labels()
            for k, view in enumerate(st.views):
                image_id = f"{st.study_id}_{k}"
                idx_rows.append({"image_index": row, "image_id": image_id, "patient_id": p.patient_id,
                                 "study_id": st.study_id, "view": view, "split": split, "report": rep.text,
                                 **{n: rep.written[n] for n in FINDINGS}})
                gt = {"image_id": image_id, "edema_severity": f.edema_severity, "edema": f.edema,
                      "cardiomegaly": f.cardiomegaly, "pleural_effusion": f.pleural_effusion,
                      "effusion_side": f.effusion_side, "effusion_size": f.effusion_size,
                      "pneumothorax": f.pneumothorax, "pneumothorax_side": f.pneumothorax_side,
                      "consolidation": f.consolidation, "atelectasis": f.atelectasis, "nodule": labels["nodule"],
                      "support_devices": f.support_devices, "view": view}
                gt.update({f"written_{n}": rep.written[n] for n in FINDINGS})
                gt["written_edema_severity"] = rep.written_edema_severity
                gt.update({
                    "pneumothorax_size": f.pneumothorax_size, "ctr": f.ctr, "consolidation_lobe": f.consolidation_lobe,
                    "consolidation_pattern": f.consolidation_pattern, "atelectasis_kind": f.atelectasis_kind,
                    "nodule_mm": f.nodule.diameter_mm if f.nodule is not None else None,
                    "devices": ";".join(f.devices), "setting": st.setting, "prior_study_id": prior_id,
                    "report_style": rep.style, "report_sections": "|".join(rep.sections),
                    "report_headers": "|".join(rep.headers), "report_errors": ";".join(rep.errors),
                    "distractors": ";".join(jobs[row].distractors),
                    # demographics, for subgroup metrics (age at the patient's first study)
                    "sex": "F" if p.female else "M", "age": p.age,
                })
                gt_rows.append(gt)
                row += 1
            prior_id = st.study_id
    index = pd.DataFrame(idx_rows)
    truth = pd.DataFrame(gt_rows)
    for n in FINDINGS:
        index[n] = _nullable(list(index[n]))
        truth[f"written_{n}"] = _nullable(list(truth[f"written_{n}"]))
    truth["written_edema_severity"] = _nullable(list(truth["written_edema_severity"]))
    return index, truth


def generate_corpus(out_dir: str | Path, n_images: int = 2000, size: int = 128, seed: int = 0, workers: int = 2,
                    config: SynthConfig | None = None, progress: bool | ProgressFn = False,
                    chunk_size: int = 32, masks: bool = True) -> Corpus:
    """Generate and write a synthetic corpus; return it opened.

    ``progress``: ``True`` shows a progress bar; a callable ``(done, total)`` is called
    after each rendered chunk instead (the CLI draws its own bar with it). Same ``seed`` and ``config`` give
    byte-identical ``images.npy``, ``index.csv`` and ``ground_truth.csv`` for any
    ``workers``. ``masks`` also writes where every finding was drawn (``masks.npy`` and
    ``masks.json``, see :mod:`radpair.data.synth.masks`); it changes no image byte.
    """
    cfg = config if config is not None else SynthConfig()
    if not isinstance(cfg, SynthConfig):
        raise ConfigError(f"config must be a SynthConfig, got {type(cfg).__name__}")
    cfg.validate()
    _validate(n_images, size, seed, workers)
    n_images, size, seed, workers = int(n_images), int(size), int(seed), int(workers)
    out = check_output_dir(out_dir, n_images, size, 1.0 + (len(CHANNELS) / 8 if masks else 0.0))

    patients = plan_cohort(n_images, seed, cfg)
    jobs = _image_jobs(patients, seed, cfg)
    writer = CorpusWriter(out, n_images, size, size)
    if masks:
        mask_writer: MaskWriter | None = MaskWriter(out, n_images, size)
    else:  # stale masks of an earlier generation in this folder would describe other images
        mask_writer = None
        remove_masks(out)
    chunks = [(size, cfg, jobs[i:i + chunk_size], bool(masks)) for i in range(0, len(jobs), chunk_size)]
    not_drawn: dict[str, list[int]] = {}
    bar = None
    if progress is True:  # a plain progress bar for library users; the CLI passes its own callback
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task("radpair synth", total=n_images)
        bar.start()
        report_progress: ProgressFn | None = lambda d, t: bar.update(task, completed=d)  # noqa: E731
    else:
        report_progress = progress if callable(progress) else None
    pool = None
    try:
        if workers == 1 or len(chunks) == 1:
            results = map(_render_chunk, chunks)
        else:  # submit every chunk now; the reports are written while the workers render
            pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=_pool_context())
            results = pool.map(_render_chunk, chunks)
        reports = _write_reports(patients, seed, cfg)
        splits = assign_splits(len(patients), seed, cfg.split_fractions)
        index, truth = _tables(patients, reports, splits, jobs)
        done = 0
        for chunk in results:
            start, arr = chunk.start, chunk.images
            writer.images[start:start + len(arr)] = arr
            if mask_writer is not None:
                mask_writer.write(start, chunk.masks, chunk.present)
                for name, rows in (chunk.not_drawn or {}).items():
                    not_drawn.setdefault(name, []).extend(rows)
            done += len(arr)
            if report_progress is not None:
                report_progress(done, n_images)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.stop()

    agreement = measure_agreement(truth)
    meta = {
        "generator": {"name": "radpair.data.synth", "version": GENERATOR_VERSION, "seed": seed,
                      "difficulty": _difficulty_name(cfg), "config": to_dict(cfg)},
        "seed": seed,
        "findings": list(FINDINGS),
        "label_source": {"index": "labels stated by the report text (1 affirmed, 0 negated, -1 uncertain, "
                                  "empty unmentioned)", "ground_truth": "labels drawn into the image"},
        "n_patients": len(patients),
        "n_studies": int(index["study_id"].nunique()),
        "views": {k: int(v) for k, v in index["view"].value_counts().sort_index().items()},
        "splits": {k: int(v) for k, v in index["split"].value_counts().sort_index().items()},
        "prevalence": {n: round(float(truth[n].mean()), 4) for n in FINDINGS},
        "normal_fraction": round(float((truth[list(FINDINGS)].sum(axis=1) == 0).mean()), 4),
        "report_agreement": agreement,
    }
    if mask_writer is not None:  # before meta.json, which marks the whole corpus complete
        mask_writer.finalize(not_drawn, {"generator": {"version": GENERATOR_VERSION, "seed": seed}})
    return writer.finalize(index, meta, label_columns=list(FINDINGS), ground_truth=truth)


__all__ = ["generate_corpus", "plan_cohort", "assign_splits", "check_output_dir", "ImageJob", "GENERATOR_VERSION"]
