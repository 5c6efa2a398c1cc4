"""``predict``: a model package applied to image files, streamed to a CSV.

Files are decoded by a thread pool a few batches ahead of the model (Pillow and the numpy
parts of pydicom release the GIL), and each batch's rows are written and flushed as soon
as it finishes, so memory holds a bounded number of batches whatever the number of images
and an interrupted run leaves every finished row on disk. Only the per-study running sums
grow, with the number of studies.
"""

from __future__ import annotations

import csv
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from radpair.errors import ConfigError, DataError
from radpair.package.inputs import Item, count_paths, iter_paths, prepare
from radpair.package.load import Package, load_package

Log = Callable[[str], None]
STATUS_OK, STATUS_FLAGGED, STATUS_ERROR = "ok", "flagged", "error"


@dataclass
class PredictSummary:
    out: Path
    n_images: int = 0
    n_predicted: int = 0
    n_errors: int = 0
    n_flagged: int = 0
    n_ood: int = 0
    studies: Path | None = None
    cams: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


class StudyMap:
    """Study id of a file: a column of a CSV mapping (``path`` column matched by full path,
    then as given, then by file name), ``folder`` (its parent folder), or a DICOM keyword."""

    def __init__(self, column: str, mapping: str | Path | None = None) -> None:
        self.column = column
        self.by_path: dict[str, str] | None = None
        if mapping is not None:
            import pandas as pd

            table = pd.read_csv(mapping, dtype=str, keep_default_na=False)
            key = next((c for c in ("path", "file", "image", "filename") if c in table.columns), None)
            if key is None or column not in table.columns:
                raise DataError(f"{mapping}: needs a 'path' column and the study column {column!r} "
                                f"(columns: {list(table.columns)})")
            self.by_path = {}
            for p, s in zip(table[key], table[column]):
                self.by_path[p] = s
                self.by_path.setdefault(os.path.abspath(p), s)
                self.by_path.setdefault(Path(p).name, s)

    @property
    def dicom_key(self) -> str | None:
        return None if self.by_path is not None or self.column == "folder" else self.column

    def study(self, item: Item) -> str:
        if self.by_path is not None:
            for k in (os.path.abspath(item.path), item.path, Path(item.path).name):
                if k in self.by_path:
                    return self.by_path[k]
            return ""
        if self.column == "folder":
            return Path(item.path).parent.name
        return str(item.info.get(self.column, "") or "")


class _Studies:
    """Running max and sum per study (the only state that grows: one row per study)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rows: dict[str, list] = {}

    def add(self, study: str, probs: np.ndarray | None) -> None:
        if not study:
            return
        r = self.rows.setdefault(study, [0, 0, np.full(self.n, -np.inf), np.zeros(self.n)])
        r[0] += 1
        if probs is not None:
            r[1] += 1
            r[2] = np.maximum(r[2], probs)
            r[3] = r[3] + probs


def _columns(pkg: Package, study: bool, cam: bool) -> list[str]:
    cols = ["path", "status", "reason"]
    if study:
        cols.append("study_id")
    cols += [f"p_{n}" for n in pkg.class_names]
    cols += ["prediction"] if pkg.categorical else [f"label_{n}" for n in pkg.class_names]
    cols += ["ood_distance", "out_of_distribution", "format", "bits", "width", "height", "view"]
    if cam:
        cols.append("cam")
    return cols


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.6g}"
    return str(x)


def predict(model: str | Path | Package, inputs: Iterable[str | Path], out: str | Path, *, batch_size: int = 32,
            cam_dir: str | Path | None = None, study_column: str | None = None, study_map: str | Path | None = None,
            device: str = "cpu", workers: int | None = None, prefetch: int = 2, progress: bool = False,
            log: Log = print) -> PredictSummary:
    """Predict every image file in ``inputs`` (files or folders, recursively) into CSV ``out``.

    Rows follow the input order; ``status`` is ``ok``, ``flagged`` (predicted, but the input
    differs from the training input, or lies far from the training features: ``reason``
    says how) or ``error`` (not predicted; ``reason`` says why)."""
    import time

    t0 = time.perf_counter()
    if batch_size < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch_size}")
    pkg = model if isinstance(model, Package) else load_package(model, device=device)
    dev = torch.device(device)
    pkg.model.to(dev).eval()
    inputs = [str(p) for p in inputs]
    if not inputs:
        raise ConfigError("no input images or folders given")
    studies_map = StudyMap(study_column, study_map) if study_column else None
    if study_map is not None and not study_column:
        raise ConfigError("--study-map needs --study-column (the CSV's study id column)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cam = None
    if cam_dir is not None:
        from radpair.package.cam import CamWriter

        cam = CamWriter(pkg, Path(cam_dir), dev)
    thresholds = pkg.thresholds
    stats = pkg.feature_stats
    summary = PredictSummary(out)
    agg = _Studies(len(pkg.class_names)) if studies_map else None
    total = count_paths(inputs) if progress else None
    n_workers = max(1, workers or min(4, os.cpu_count() or 1))
    dicom_key = studies_map.dicom_key if studies_map else None
    from radpair.progress import count_progress

    with open(out, "w", newline="") as fh, ThreadPoolExecutor(n_workers, thread_name_prefix="radpair-decode") as pool, \
            count_progress("[predict]", unit="images", enabled=progress) as bar:
        task = bar.add_task("predict", total=total)
        writer = csv.writer(fh)
        columns = _columns(pkg, studies_map is not None, cam is not None)
        writer.writerow(columns)
        paths = iter_paths(inputs)
        pending: deque = deque()
        ahead = batch_size * (prefetch + 1)

        def fill() -> None:
            while len(pending) < ahead:
                p = next(paths, None)
                if p is None:
                    return
                pending.append(pool.submit(prepare, p, pkg.preprocessing, dicom_key))

        fill()
        while pending:
            batch = [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
            fill()  # keep the pool decoding while the model runs
            rows = _run_batch(pkg, batch, dev, thresholds, stats, cam, summary)
            for item, row in zip(batch, rows):
                if studies_map is not None:
                    sid = studies_map.study(item)
                    row["study_id"] = sid
                    agg.add(sid, row.get("_probs"))
                writer.writerow([_fmt(row.get(c)) for c in columns])
            fh.flush()
            bar.advance(task, len(batch))
    if cam is not None:
        summary.cams = cam.count
    if agg is not None:
        summary.studies = _write_studies(out, pkg, agg, thresholds)
    summary.seconds = time.perf_counter() - t0
    log(f"[predict] {summary.n_predicted} of {summary.n_images} images predicted "
        f"({summary.n_errors} unreadable, {summary.n_flagged} flagged, {summary.n_ood} out of distribution) -> {out}")
    return summary


def _run_batch(pkg: Package, batch: list[Item], dev: torch.device, thresholds, stats, cam, summary) -> list[dict]:
    rows: list[dict] = []
    ok = [k for k, it in enumerate(batch) if it.image is not None]
    probs = feats = None
    if ok:
        x = pkg.preprocessing.to_tensor(np.stack([batch[k].image for k in ok])).to(dev)
        with torch.inference_mode():
            p, f = pkg.model.predict(x)
        probs = p.float().cpu().numpy()
        feats = None if f is None else f.float().cpu().numpy()
    dist = stats.distance(feats) if (stats is not None and feats is not None) else None
    cams = cam.write(batch, ok, probs) if (cam is not None and ok) else {}
    pos = {k: j for j, k in enumerate(ok)}
    for k, it in enumerate(batch):
        summary.n_images += 1
        row: dict[str, Any] = {"path": it.path, **{c: it.info.get(c) for c in ("format", "bits", "width", "height",
                                                                              "view")}}
        if it.image is None:
            summary.n_errors += 1
            kind = (it.error or "").split(" (")[0]
            summary.reasons[kind] = summary.reasons.get(kind, 0) + 1
            row.update(status=STATUS_ERROR, reason=it.error)
            rows.append(row)
            continue
        j = pos[k]
        pr = probs[j]
        row["_probs"] = pr
        for n, v in zip(pkg.class_names, pr):
            row[f"p_{n}"] = float(v)
        if pkg.categorical:
            row["prediction"] = pkg.class_names[int(np.argmax(pr))]
        else:
            th = thresholds if thresholds is not None else np.full(len(pr), 0.5)
            for n, v, t in zip(pkg.class_names, pr, th):
                row[f"label_{n}"] = int(v >= t)
        flags = list(it.flags)
        if dist is not None:
            row["ood_distance"] = float(dist[j])
            far = bool(dist[j] > stats.threshold)
            row["out_of_distribution"] = int(far)
            if far:
                summary.n_ood += 1
                flags.append(f"far from the training images (feature distance {dist[j]:.1f} > {stats.threshold:.1f})")
        if k in cams:
            row["cam"] = cams[k]
        summary.n_predicted += 1
        if flags:
            summary.n_flagged += 1
        row.update(status=STATUS_FLAGGED if flags else STATUS_OK, reason="; ".join(flags))
        rows.append(row)
    return rows


def _write_studies(out: Path, pkg: Package, agg: _Studies, thresholds) -> Path:
    path = out.with_name(out.stem + ".studies.csv")
    names = pkg.class_names
    cols = ["study_id", "n_images", "n_predicted"] + [f"max_p_{n}" for n in names] + [f"mean_p_{n}" for n in names]
    cols += ["prediction"] if pkg.categorical else [f"label_{n}" for n in names]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for sid, (n, n_ok, mx, sm) in agg.rows.items():
            if n_ok:
                mean = sm / n_ok
                row = [sid, n, n_ok, *map(_fmt, mx), *map(_fmt, mean)]
                if pkg.categorical:
                    row.append(names[int(np.argmax(mean))])
                else:  # a study is positive when any of its images is (the max crosses the threshold)
                    th = thresholds if thresholds is not None else np.full(len(names), 0.5)
                    row += [int(mx[c] >= th[c]) for c in range(len(names))]
            else:
                row = [sid, n, 0] + [""] * (2 * len(names) + (1 if pkg.categorical else len(names)))
            w.writerow(row)
    return path
