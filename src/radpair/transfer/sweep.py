"""``run_transfer``: every arm at every label budget and repeat, selected on validation,
scored on test with shared bootstrap draws, compared pairwise.

Order of work, each step resumable from what an interrupted run left on disk:

1. the task's labels for the train, validate and test rows (checked against its schema);
2. the (budget, repeat) subsets and validation draws, saved as manifests (or read back
   with ``manifest=``), shared by every arm;
3. frozen features, once per start, for the rows any subset, draw or the test set uses
   (``features/``, keyed by a fingerprint of the start and the rows);
4. one cell per (arm, budget, repeat): the protocol's grid is fitted on the training
   subset, the best setting is chosen on the validation draw, and validation and test
   probabilities plus the head are saved (``cells/<arm>/<budget>-r<k>/``);
5. scoring: thresholds chosen on validation labels, metrics with patient-bootstrap CIs on
   one set of draws for every cell, summaries over repeats and paired differences.

Nothing in steps 1-4 reads a test label. A budget that covers the whole pool runs once,
since its repeats would be identical.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from radpair.config import to_dict
from radpair.data.corpus import Corpus, atomic_write_text
from radpair.errors import ConfigError, DataError, LabelFallbackWarning
from radpair.tasks import TaskLabels, TaskSpec, load_task, resolve_split, task_labels
from radpair.transfer.arms import Arm, Protocol, Start, cross_arms, parse_arm, parse_protocols
from radpair.transfer.config import TransferConfig
from radpair.transfer.heads import build_start_encoder
from radpair.transfer.results import SUMMARY_METRICS, CellResult, TransferResult, summarise
from radpair.transfer.selection import better, validation_score
from radpair.transfer.subsets import (
    Budget,
    SubsetManifest,
    draw_generator,
    draw_rows,
    load_manifests,
    parse_budgets,
    rows_for_ids,
)

Log = Callable[[str], None]
PAIRED_METRICS = ("macro_auc", "macro_ap", "macro_f1")
CELL_CODE_VERSION = 2
"""Part of every cell's fingerprint: bumped when a protocol's code changes its results
(2: Newton solver for the linear protocol), so old cells are not mixed with new ones."""


@dataclass
class Subset:
    budget: Budget
    repeat: int
    train: np.ndarray  # positions into TaskData.train_rows
    val: np.ndarray  # positions into TaskData.val_rows
    manifest: SubsetManifest


@dataclass
class TaskData:
    """Rows (corpus index positions) and checked labels of one task on one corpus."""

    spec: TaskSpec
    train_rows: np.ndarray
    val_rows: np.ndarray
    test_rows: np.ndarray
    train: TaskLabels
    val: TaskLabels
    test: TaskLabels
    patients: np.ndarray  # for every corpus row
    image_ids: np.ndarray
    image_index: np.ndarray  # corpus row -> row of images.npy
    label_notes: tuple[str, ...] = ()  # e.g. a fallback labeler that stood in; results record them


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def corpus_fingerprint(corpus: Corpus) -> str:
    """What the corpus is, for cache keys: its meta, index and truth tables by content, and
    its image file by size and modification time (hashing gigabytes of pixels on every run
    would cost more than it protects; a regenerated file gets a new time)."""
    parts = {"meta": corpus.meta}
    for name in ("index.csv", "ground_truth.csv"):
        path = corpus.root / name
        parts[name] = file_sha256(path) if path.is_file() else None
    images = corpus.root / "images.npy"
    st = images.stat()
    parts["images.npy"] = [st.st_size, st.st_mtime_ns]
    return _sha(parts)


def _labels_sha(labels: TaskLabels) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels.y).tobytes() + np.ascontiguousarray(labels.mask).tobytes()
                          ).hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- 1. task data -------------------------------------------------------------------------------
def load_task_data(corpus: Corpus, spec: TaskSpec, views: list[str] | None) -> TaskData:
    index = corpus.index
    keep = np.ones(len(index), dtype=bool)
    if views:
        keep &= index["view"].astype(str).isin(views).to_numpy()
        if not keep.any():
            raise DataError(f"{corpus.root}: no image has a view in {views} "
                            f"(views: {sorted(index['view'].astype(str).unique())})")
    split = index["split"].astype(str).to_numpy()

    def rows_of(name: str) -> np.ndarray:
        rows = np.flatnonzero((split == resolve_split(corpus, name)) & keep)
        if rows.size == 0:
            raise DataError(f"{corpus.root}: split {name!r} has no rows with views {views or 'any'}")
        return rows

    train_rows, val_rows, test_rows = rows_of(spec.train_split), rows_of(spec.validate_split), rows_of(spec.test_split)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LabelFallbackWarning)
        train = task_labels(corpus, spec, spec.train_labels, train_rows)
        val = task_labels(corpus, spec, spec.train_labels, val_rows)
        test = task_labels(corpus, spec, spec.test_labels, test_rows, test=True)
    notes = tuple(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, LabelFallbackWarning)))
    for w in caught:  # everything else passes through unchanged
        if not issubclass(w.category, LabelFallbackWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for note in notes:  # once each, not once per split
        warnings.warn(note, LabelFallbackWarning, stacklevel=2)
    usable = test.usable_rows
    if not usable.any():
        raise DataError(f"{corpus.root}: no test image has a usable {spec.test_labels!r} label for task {spec.name!r}")
    test_rows, test = test_rows[usable], test.take(np.flatnonzero(usable))
    return TaskData(spec, train_rows, val_rows, test_rows, train, val, test,
                    index["patient_id"].astype(str).to_numpy(), index["image_id"].astype(str).to_numpy(),
                    index["image_index"].to_numpy(dtype=np.int64), notes)


# ---- 2. subsets ---------------------------------------------------------------------------------
def make_subsets(data: TaskData, budgets: list[Budget], repeats: int, seed: int, val_mode: str,
                 manifest_dir: str | None, log: Log) -> list[Subset]:
    train_ids = {i: k for k, i in enumerate(data.image_ids[data.train_rows])}
    val_ids = {i: k for k, i in enumerate(data.image_ids[data.val_rows])}
    pool = int(data.train.usable_rows.sum())
    loaded = load_manifests(manifest_dir) if manifest_dir else None
    if loaded:
        modes = {m.val_mode for m in loaded.values()}
        if modes != {val_mode}:
            raise DataError(f"{manifest_dir}: the manifests' validation draws are {sorted(modes)}, but this run asks "
                            f"for val={val_mode!r}; rerun with --val {sorted(modes)[0]}")
    out: list[Subset] = []
    for b in budgets:
        size = b.size(pool)
        n_rep = 1 if size >= pool else repeats
        for r in range(n_rep):
            if loaded is not None:
                m = loaded.get((b.key, r))
                if m is None:
                    raise DataError(f"{manifest_dir}: no manifest for budget {b.key} repeat {r}")
                if m.task != data.spec.name:
                    raise DataError(f"{manifest_dir}/{m.file_name}: made for task {m.task!r}, not {data.spec.name!r}")
                where = f"{manifest_dir}/{m.file_name}"
                out.append(Subset(b, r, rows_for_ids(m.train_ids, train_ids, where), rows_for_ids(m.val_ids, val_ids, where), m))
                continue
            tr = draw_rows(data.train, data.patients[data.train_rows], size, draw_generator(seed, b, r, 0))
            vsize = None if val_mode == "full" else len(tr.rows)
            va = draw_rows(data.val, data.patients[data.val_rows], vsize, draw_generator(seed, b, r, 1))
            m = SubsetManifest(data.spec.name, b.key, r, seed, data.image_ids[data.train_rows][tr.rows].tolist(),
                               data.image_ids[data.val_rows][va.rows].tolist(), val_mode, tr.pool_size, va.pool_size,
                               tr.lacking, va.lacking)
            out.append(Subset(b, r, tr.rows, va.rows, m))
            if tr.lacking:
                log(f"  budget {b.key} repeat {r}: the training subset lacks {', '.join(tr.lacking[:4])}"
                    + (" ..." if len(tr.lacking) > 4 else ""))
    return out


# ---- 3. features --------------------------------------------------------------------------------
def encoder_features(encoder: torch.nn.Module, corpus: Corpus, image_rows: np.ndarray, maps: bool,
                     batch_size: int, device: torch.device, progress: Any = None) -> np.ndarray:
    """Pooled features (N, D), or feature maps (N, C, h, w) with ``maps``, of a frozen encoder
    (BatchNorm statistics and dropout in eval mode; the caller's modes are restored)."""
    from radpair.data.tensors import images_to_tensor
    from radpair.evaluation.features import frozen_eval

    chunks = []
    with frozen_eval(encoder, device), torch.inference_mode():
        for start in range(0, len(image_rows), batch_size):
            x = images_to_tensor(corpus.read_images(image_rows[start:start + batch_size])).to(device)
            f = encoder.feature_map(x) if maps else encoder(x)
            if f.ndim > 2 and not maps:
                f = f.flatten(2).mean(-1)
            chunks.append(f.float().cpu().numpy())
            if progress is not None:
                progress(len(x))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


class FeatureStore:
    """Features of one start, cached on disk for every row extracted so far.

    The file is keyed by the start (its weights' hash), the corpus fingerprint and whether
    it holds feature maps; a later run with more budgets or repeats extracts only the rows
    it has not seen and adds them.
    """

    def __init__(self, folder: Path, start: Start, start_sha: str, corpus_fp: str, rows: np.ndarray, maps: bool) -> None:
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        self.maps = maps
        key = _sha({"start": start.name, "sha": start_sha, "corpus": corpus_fp, "maps": maps})
        self.path = folder / f"{start.name}{'-maps' if maps else ''}-{key[:16]}.npz"
        self.values: np.ndarray | None = None
        self.pos: dict[int, int] = {}

    def load_or_extract(self, extract: Callable[[np.ndarray], np.ndarray]) -> tuple[float, int]:
        """(seconds spent extracting, rows extracted now)."""
        have_rows = np.zeros(0, dtype=np.int64)
        have = None
        if self.path.is_file():
            with np.load(self.path) as z:
                have_rows, have = z["rows"], z["values"]
        missing = np.setdiff1d(self.rows, have_rows)
        seconds = 0.0
        if missing.size:
            t0 = time.perf_counter()
            new = extract(missing)
            seconds = time.perf_counter() - t0
            rows = np.concatenate([have_rows, missing])
            values = new if have is None else np.concatenate([have, new])
            order = np.argsort(rows)
            rows, values = rows[order], values[order]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp.npz")
            np.savez(tmp, rows=rows, values=values)
            os.replace(tmp, self.path)
        else:
            rows, values = have_rows, have
        self.pos = {int(r): k for k, r in enumerate(rows)}
        self.values = values
        return seconds, int(missing.size)

    def take(self, rows: np.ndarray) -> np.ndarray:
        assert self.values is not None
        return self.values[[self.pos[int(r)] for r in rows]]


# ---- 4. cells -----------------------------------------------------------------------------------
def _grid(arm: Arm, cfg: TransferConfig) -> list[dict[str, float]]:
    if arm.protocol is Protocol.LINEAR:
        return [{"c": float(c)} for c in cfg.linear.c_grid]
    s = cfg.frozen_head if arm.protocol is Protocol.FROZEN_HEAD else cfg.finetune
    return [{"lr": float(lr), "weight_decay": float(wd)} for lr in s.lr for wd in s.weight_decay]


def _settings(arm: Arm, cfg: TransferConfig, n_train: int) -> dict[str, Any]:
    """The protocol settings a cell's result depends on. For ``finetune`` that is the step
    limit the draw gets, not the rule giving it, so a rule change reruns only the cells
    whose limit it changes."""
    if arm.protocol is Protocol.FINETUNE:
        settings = to_dict(cfg.finetune)
        settings.pop("min_epochs")
        settings.pop("epochs")
        settings["max_steps"] = cfg.finetune.step_limit(n_train)
    else:
        settings = to_dict({Protocol.LINEAR: cfg.linear, Protocol.FROZEN_HEAD: cfg.frozen_head}[arm.protocol])
    if settings.get("optimizer") == "adamw":  # the default before it was a choice: earlier cells stay valid
        del settings["optimizer"]
    elif settings.get("optimizer") == "sgd":
        settings["sgd_output_rate"] = "per-output"  # training.output_rate_scale (cells before it are stale)
    return settings


def _choose(fits: list[Any], scores: list[tuple[float, float]]) -> int:
    best = None
    for j, s in enumerate(scores):
        if best is None or better(s, scores[best]):
            best = j
    return int(best or 0)


def _safetensors(state: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).detach().cpu().contiguous()
               for k, v in state.items()}
    save_file(tensors, str(path), metadata={k: json.dumps(v, default=str) for k, v in meta.items()})


class _Cell:
    def __init__(self, arm: Arm, sub: Subset, folder: Path, fingerprint: str) -> None:
        self.arm, self.sub, self.folder, self.fingerprint = arm, sub, folder, fingerprint

    @property
    def done(self) -> bool:
        f = self.folder / "cell.json"
        if not f.is_file() or not (self.folder / "predictions.npz").is_file():
            return False
        try:
            return json.loads(f.read_text()).get("fingerprint") == self.fingerprint
        except ValueError:
            return False

    def load(self) -> tuple[CellResult, np.ndarray, np.ndarray]:
        d = json.loads((self.folder / "cell.json").read_text())
        with np.load(self.folder / "predictions.npz") as z:
            return CellResult.from_dict(d["cell"]), z["val"], z["test"]

    def save(self, cell: CellResult, val_probs: np.ndarray, test_probs: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "predictions.tmp.npz"
        np.savez(tmp, val=val_probs.astype(np.float32), test=test_probs.astype(np.float32))
        os.replace(tmp, self.folder / "predictions.npz")
        atomic_write_text(self.folder / "cell.json", json.dumps({"fingerprint": self.fingerprint, "cell": cell.to_dict()},
                                                                 indent=1, default=str))


def _pool_context():
    import multiprocessing as mp

    return mp.get_context("spawn")  # a forked torch with live OpenMP threads can hang


# ---- the run ------------------------------------------------------------------------------------
def run_transfer(cfg: TransferConfig, corpus: Corpus | str | Path, out: str | Path, *, log: Log = print,
                 progress: bool = False, task: TaskSpec | None = None) -> TransferResult:
    """Run the study ``cfg`` on ``corpus``; write ``out/results.json`` and return it."""
    t_start = time.perf_counter()
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(corpus, Corpus):
        corpus = Corpus.open(corpus)
    spec = (task or load_task(cfg.task)).with_sources(cfg.train_labels or None, cfg.test_labels or None)
    views = spec.views if cfg.views is None else cfg.views
    device = torch.device(cfg.device)
    timing: dict[str, Any] = {"features": {}, "protocols": {}}

    data = load_task_data(corpus, spec, views)
    budgets = parse_budgets(cfg.n, cfg.fractions)
    starts = {s.name: s for s in (Start.parse(e, cfg.arch) for e in cfg.encoders)}
    if cfg.arms:
        arms = [parse_arm(a, starts) for a in cfg.arms]
    else:
        arms = cross_arms(list(starts.values()), parse_protocols(cfg.protocols))
    if len({a.key for a in arms}) != len(arms):
        raise ConfigError(f"arms given twice: {[a.key for a in arms]}")
    start_sha = {}
    for s in starts.values():
        if s.weights is not None:
            if not Path(s.weights).is_file():
                raise DataError(f"encoder weights {s.weights!r} do not exist")
            start_sha[s.name] = file_sha256(s.weights)
            _warn_input_mismatch(s, corpus, log)
        else:
            start_sha[s.name] = f"random:{s.arch}:{cfg.seed}"
    log(f"[transfer] task {spec.name} ({spec.schema}, {len(data.train.class_names)} outputs), "
        f"train labels: {spec.train_labels}, test labels: {spec.test_labels}; "
        f"{len(data.train_rows)} train / {len(data.val_rows)} validate / {len(data.test_rows)} test rows")

    subsets = make_subsets(data, budgets, cfg.repeats, cfg.seed, cfg.val, cfg.manifest or None, log)
    for sub in subsets:
        sub.manifest.save(out / "manifests")
    t_sub = time.perf_counter()

    test_sha = _sha(data.image_ids[data.test_rows].tolist())
    corpus_fp = corpus_fingerprint(corpus)
    # what a cell's predictions depend on: not the task's wording, nor where the test labels
    # come from (only which test images), nor a weights file's path (its content is hashed)
    task_fp = {k: v for k, v in spec.to_dict().items() if k not in ("description", "test_labels", "test_columns")}
    base_fp = {"code": CELL_CODE_VERSION, "task": task_fp, "test": test_sha, "seed": cfg.seed, "views": views,
               "corpus": corpus_fp,
               "train_labels": _labels_sha(data.train), "val_labels": _labels_sha(data.val)}

    # features for the frozen protocols
    stores: dict[tuple[str, bool], FeatureStore] = {}
    need_rows = np.unique(np.concatenate(
        [data.train_rows[s.train] for s in subsets] + [data.val_rows[s.val] for s in subsets] + [data.test_rows]))
    for arm in arms:
        if arm.protocol is Protocol.FINETUNE:
            continue
        maps = arm.protocol is Protocol.FROZEN_HEAD and cfg.frozen_head.head == "timnet"
        key = (arm.start.name, maps)
        if key not in stores:
            stores[key] = FeatureStore(out / "features", arm.start, start_sha[arm.start.name], corpus_fp, need_rows,
                                       maps)
    for (name, maps), store in stores.items():
        start = starts[name]

        def extract(rows: np.ndarray, start=start, maps=maps) -> np.ndarray:
            enc = build_start_encoder(start.weights, start.arch, cfg.seed)
            return encoder_features(enc, corpus, data.image_index[rows], maps, cfg.feature_batch, device)

        secs, n_new = store.load_or_extract(extract)
        timing["features"][f"{name}{' (maps)' if maps else ''}"] = round(secs, 2)
        log(f"[transfer] features of {name}{' (maps)' if maps else ''}: {n_new} rows extracted in {secs:.1f}s, "
            f"{len(store.rows) - n_new} cached")

    # cells
    cells: list[_Cell] = []
    for arm in arms:
        for sub in subsets:
            start_fp = {"name": arm.start.name, "sha": start_sha[arm.start.name],
                        "arch": arm.start.arch if arm.start.is_random else None}
            fp = _sha({**base_fp, "protocol": arm.protocol.value, "start": start_fp,
                       "settings": _settings(arm, cfg, len(sub.train)),
                       "train": sub.manifest.train_sha256, "val": sub.manifest.val_sha256, "repeat": sub.repeat,
                       "budget": sub.budget.key, "save_models": cfg.save_models})
            folder = out / "cells" / arm.dir_name / f"{sub.budget.file_key}-r{sub.repeat}"
            cells.append(_Cell(arm, sub, folder, fp))
    todo = [c for c in cells if not c.done]
    if len(todo) < len(cells):
        log(f"[transfer] {len(cells) - len(todo)} of {len(cells)} cells done by an earlier run; reusing them")
    results: dict[int, tuple[CellResult, np.ndarray, np.ndarray]] = {}
    for k, c in enumerate(cells):
        if c.done:
            results[k] = c.load()
    from radpair.progress import count_progress

    frozen = [(k, c) for k, c in enumerate(cells) if not c.done and c.arm.protocol is not Protocol.FINETUNE]
    tuned = [(k, c) for k, c in enumerate(cells) if not c.done and c.arm.protocol is Protocol.FINETUNE]
    with count_progress("[transfer] cells", unit="cells", enabled=progress, transient=True) as bar:
        task_id = bar.add_task("cells", total=len(frozen) + len(tuned))
        quiet = bar.console.print if progress else log
        runner = _CellRunner(cfg, corpus, data, stores, device, quiet)
        for k, c in frozen:
            t0 = time.perf_counter()
            results[k] = runner.run_frozen(c)
            proto = c.arm.protocol.value
            timing["protocols"][proto] = round(timing["protocols"].get(proto, 0.0) + time.perf_counter() - t0, 2)
            bar.advance(task_id)
        if tuned:
            t0 = time.perf_counter()
            for k, res in runner.run_finetune(tuned):
                results[k] = res
                bar.advance(task_id)
            timing["protocols"]["finetune"] = round(time.perf_counter() - t0, 2)
    t_cells = time.perf_counter()

    # the test labels beside the predictions, so a page or another metric can be computed later
    tmp = out / "test_labels.tmp.npz"
    np.savez(tmp, y=data.test.y, mask=data.test.mask, image_ids=data.image_ids[data.test_rows].astype(str),
             patients=data.patients[data.test_rows].astype(str), class_names=np.array(data.test.class_names, dtype=str))
    os.replace(tmp, out / "test_labels.npz")
    result = _score(cfg, spec, data, arms, subsets, cells, results, corpus)
    timing.update({"subsets_s": round(t_sub - t_start, 2), "cells_s": round(t_cells - t_sub, 2),
                   "scoring_s": round(time.perf_counter() - t_cells, 2), "total_s": round(time.perf_counter() - t_start, 2)})
    result.timing = timing
    result.save(out / "results.json")
    log(f"[transfer] results: {out / 'results.json'} ({timing['total_s']:.0f}s)")
    return result


def _warn_input_mismatch(start: Start, corpus: Corpus, log: Log) -> None:
    from radpair.models.export import input_mismatches, read_safetensors_metadata

    try:
        meta = read_safetensors_metadata(start.weights)
    except Exception:  # noqa: BLE001 - an unreadable file fails with a clear error when loaded
        return
    for problem in input_mismatches(meta, corpus):
        log(f"warning: {start.weights}: {corpus.root} differs from the encoder's training images: {problem}")


class _CellRunner:
    def __init__(self, cfg: TransferConfig, corpus: Corpus, data: TaskData, stores: dict, device: torch.device,
                 log: Log) -> None:
        self.cfg, self.corpus, self.data, self.stores, self.device, self.log = cfg, corpus, data, stores, device, log

    def _labels(self, sub: Subset) -> tuple[TaskLabels, TaskLabels]:
        return self.data.train.take(sub.train), self.data.val.take(sub.val)

    def _seed(self, c: _Cell) -> tuple[int, ...]:
        return (self.cfg.seed, c.sub.budget.seed_code(), c.sub.repeat, 101)

    def _finish(self, c: _Cell, grid: list[dict], fits_summary: list[dict], scores: list[tuple[float, float]], j: int,
                val_probs: np.ndarray, test_probs: np.ndarray, state: dict | None, seconds: float,
                notes: list[str]) -> tuple[CellResult, np.ndarray, np.ndarray]:
        files = {}
        if self.cfg.save_models and state is not None:
            c.folder.mkdir(parents=True, exist_ok=True)
            meta = {"arm": c.arm.to_dict(), "chosen": grid[j], "task": self.data.spec.name,
                    "class_names": self.data.train.class_names, "schema": self.data.train.schema.to_dict(),
                    "protocol_settings": _settings(c.arm, self.cfg, len(c.sub.train)), "input": _input(self.corpus)}
            name = "model.safetensors" if c.arm.protocol is Protocol.FINETUNE else "head.safetensors"
            _safetensors(state, c.folder / name, meta)
            files["weights"] = str((c.folder / name).relative_to(c.folder.parents[2]))
        cell = CellResult(c.arm.key, c.sub.budget.key, c.sub.repeat, len(c.sub.train), len(c.sub.val), dict(grid[j]),
                          fits_summary, seconds, notes=notes, files=files,
                          subset={"train_sha256": c.sub.manifest.train_sha256, "val_sha256": c.sub.manifest.val_sha256})
        c.save(cell, val_probs, test_probs)
        score = scores[j][0]
        self.log(f"  {c.arm.label:<40s} N={c.sub.budget.key:>5} r{c.sub.repeat}: chose {grid[j]} "
                 f"(validation {'n/a' if math.isnan(score) else f'{score:.3f}'}; {seconds:.1f}s)")
        return cell, val_probs, test_probs

    def run_frozen(self, c: _Cell) -> tuple[CellResult, np.ndarray, np.ndarray]:
        from radpair.transfer.linear import fit_linear_grid
        from radpair.transfer.training import (linear_head_predict, timnet_head_predict, train_linear_heads,
                                               train_timnet_heads)

        t0 = time.perf_counter()
        cfg, data, sub = self.cfg, self.data, c.sub
        train, val = self._labels(sub)
        maps = c.arm.protocol is Protocol.FROZEN_HEAD and cfg.frozen_head.head == "timnet"
        store = self.stores[(c.arm.start.name, maps)]
        x_tr = store.take(data.train_rows[sub.train])
        x_va = store.take(data.val_rows[sub.val])
        x_te = store.take(data.test_rows)
        grid = _grid(c.arm, cfg)
        categorical = train.schema.kind.is_categorical
        notes: list[str] = []
        if c.arm.protocol is Protocol.LINEAR:
            models = fit_linear_grid(x_tr, train, cfg.linear.c_grid, cfg.linear.max_iter, cfg.linear.tolerance)
            vals = [m.predict_proba(x_va) for m in models]
            scores = [validation_score(val, v) for v in vals]
            j = _choose(models, scores)
            summary = [{**g, "val_score": _r(s[0]), "val_loss": _r(s[1])} for g, s in zip(grid, scores)]
            test = models[j].predict_proba(x_te)
            state = {k: torch.from_numpy(v) for k, v in models[j].state().items()}
            if models[j].constant:
                notes.append("not fitted (one label value in the subset), predicting its rate: "
                             + ", ".join(train.class_names[k] for k in sorted(models[j].constant)))
            return self._finish(c, grid, summary, scores, j, vals[j], test, state, time.perf_counter() - t0, notes)
        s = cfg.frozen_head
        if maps:
            fits = train_timnet_heads(x_tr, train, x_va, val, grid, s.batch_size, s.max_epochs, s.patience,
                                      self._seed(c), s.timnet_channels, s.timnet_hidden, s.optimizer)
            j = _choose(fits, [f.best for f in fits])
            test = timnet_head_predict(fits[j].state, x_te, train.schema.n_outputs(len(train.columns)), categorical,
                                       s.timnet_channels, s.timnet_hidden)
        else:
            fits = train_linear_heads(x_tr, train, x_va, val, grid, s.batch_size, s.max_epochs, s.patience,
                                      self._seed(c), s.optimizer)
            j = _choose(fits, [f.best for f in fits])
            test = linear_head_predict(fits[j].state, x_te, categorical)
        return self._finish(c, grid, [f.summary() for f in fits], [f.best for f in fits], j, fits[j].val_probs, test,
                            fits[j].state, time.perf_counter() - t0, notes)

    def run_finetune(self, cells: list[tuple[int, _Cell]]):
        """All grid values of all fine-tuning cells, in ``workers`` processes; yields finished cells."""
        from radpair.transfer.training import Classifier, finetune_one, predict_images

        cfg = self.cfg
        jobs, owners = [], []
        in_pool = cfg.workers > 1 and sum(len(_grid(c.arm, cfg)) for _, c in cells) > 1
        threads = max(1, torch.get_num_threads() // cfg.workers) if in_pool else None
        for k, c in cells:
            train, val = self._labels(c.sub)
            for j, g in enumerate(_grid(c.arm, cfg)):
                jobs.append({"corpus": str(self.corpus.root),
                             "train_rows": self.data.image_index[self.data.train_rows[c.sub.train]],
                             "val_rows": self.data.image_index[self.data.val_rows[c.sub.val]],
                             "train": train, "val": val,
                             "start": {"weights": c.arm.start.weights, "arch": c.arm.start.arch, "seed": cfg.seed},
                             "config": g, "settings": cfg.finetune, "seed": self._seed(c) + (j,),
                             "device": cfg.device, "threads": threads})
                owners.append((k, j))
        pending: dict[int, dict[int, Any]] = {k: {} for k, _ in cells}
        by_k = dict(cells)
        grids = {k: _grid(c.arm, cfg) for k, c in cells}
        t0 = {k: time.perf_counter() for k, _ in cells}
        test_images = None

        def finished(k: int):
            nonlocal test_images
            c = by_k[k]
            fits = [pending[k][j] for j in range(len(grids[k]))]
            j = _choose(fits, [f.best for f in fits])
            if test_images is None:
                test_images = self.corpus.read_images(self.data.image_index[self.data.test_rows])
            encoder = build_start_encoder(c.arm.start.weights, c.arm.start.arch, cfg.seed)
            train = self.data.train
            model = Classifier(encoder, train.schema.n_outputs(len(train.columns)))
            model.load_state_dict(fits[j].state)
            model.to(self.device)
            test = predict_images(model, test_images, train.schema.kind.is_categorical, self.device)
            seconds = sum(f.seconds for f in fits) + (time.perf_counter() - t0[k]) * 0  # work, not wall time
            return k, self._finish(c, grids[k], [f.summary() for f in fits], [f.best for f in fits], j,
                                   fits[j].val_probs, test, fits[j].state, seconds, [])

        if in_pool:
            with ProcessPoolExecutor(max_workers=min(cfg.workers, len(jobs)), mp_context=_pool_context()) as pool:
                futures = [pool.submit(finetune_one, job) for job in jobs]
                for (k, j), fut in zip(owners, futures):
                    pending[k][j] = fut.result()
                    if len(pending[k]) == len(grids[k]):
                        yield finished(k)
        else:
            for (k, j), job in zip(owners, jobs):
                pending[k][j] = finetune_one(job)
                if len(pending[k]) == len(grids[k]):
                    yield finished(k)


def _r(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)


def _input(corpus: Corpus) -> dict:
    from radpair.models.export import input_record

    return input_record(corpus)


# ---- 5. scoring ---------------------------------------------------------------------------------
def _subgroup_columns(corpus: Corpus, rows: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """View plus whatever demographic columns the corpus has (index, else ground truth)."""
    out: dict[str, np.ndarray] = {}
    frames = [corpus.index]
    if corpus.ground_truth is not None:
        frames.append(corpus.labels("ground_truth"))
    for name in names:
        for frame in frames:
            if name in frame.columns:
                col = frame[name].to_numpy()[rows]
                # a missing value belongs to no subgroup (None), not to one called "nan"
                out[name] = np.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                                      for v in col], dtype=object)
                break
            if name == "age_band" and "age" in frame.columns:
                age = frame["age"].to_numpy(dtype=float)[rows]
                bands = np.array(["0-39", "40-59", "60-79", "80+"])  # sorts in age order
                band = bands[np.digitize(np.nan_to_num(age), [40, 60, 80])].astype(object)
                band[np.isnan(age)] = None  # a missing age belongs to no band, as above
                out[name] = band
                break
    return out


def _score(cfg: TransferConfig, spec: TaskSpec, data: TaskData, arms: list[Arm], subsets: list[Subset],
           cells: list[_Cell], results: dict[int, tuple[CellResult, np.ndarray, np.ndarray]],
           corpus: Corpus) -> TransferResult:
    from radpair.evaluation.paired import BootstrapDraws, paired_table
    from radpair.evaluation.taskmetrics import choose_thresholds, ordinal_cut_names, score_task

    kind = data.test.kind
    names = data.test.class_names
    draws = BootstrapDraws.draw(data.patients[data.test_rows], cfg.n_bootstrap, cfg.seed) if cfg.n_bootstrap else None
    groups = _subgroup_columns(corpus, data.test_rows, cfg.subgroups)
    scored: dict[tuple[str, str], list[Any]] = {}

    def score(k: int) -> tuple[CellResult, Any]:
        c = cells[k]
        cell, val_probs, test_probs = results[k]
        thresholds = None
        if not data.val.schema.kind.is_categorical:
            val = data.val.take(c.sub.val)
            th = choose_thresholds(kind, val.y, val.mask, np.asarray(val_probs, dtype=np.float32).astype(np.float64))
            thresholds = th
            cell.thresholds = None if th is None else [float(v) for v in np.asarray(th)]
            if th is not None and c.folder.is_dir():  # beside the head, for packaging a model later
                atomic_write_text(c.folder / "thresholds.json", json.dumps(
                    {"chosen_on": "validation labels (F1-maximising)", "class_names": names, **th.to_dict()}, indent=1))
        # scored from the float32 values a reused cell reads back, so fresh and reused agree
        test_probs = np.asarray(test_probs, dtype=np.float32).astype(np.float64)
        metrics = score_task(kind, data.test.y, data.test.mask, test_probs, names, thresholds=thresholds, draws=draws,
                             subgroups=groups, confidence=cfg.confidence)
        cell.metrics = metrics.to_dict()
        return cell, metrics

    scored_cells = [score(k) for k in range(len(cells))]
    out_cells: list[CellResult] = []
    for c, (cell, metrics) in zip(cells, scored_cells):
        scored.setdefault((c.arm.key, c.sub.budget.key), []).append(metrics)
        out_cells.append(cell)
    budgets = list(dict.fromkeys(s.budget.key for s in subsets))
    summaries = []
    for arm in arms:
        for b in budgets:
            these = [cell for cell in out_cells if cell.arm == arm.key and cell.budget == b]
            cuts = ordinal_cut_names(data.test.schema.n_levels) if kind == "ordinal" else []
            for metric in (*SUMMARY_METRICS, *cuts):
                if any(metric in cell.metrics.get("values", {}) for cell in these):
                    summaries.append({"arm": arm.key, "budget": b, **summarise(these, metric, cfg.confidence)})
    paired = []
    if draws is not None:
        for b in budgets:
            per_arm = {arm.key: scored[(arm.key, b)] for arm in arms}
            for metric in PAIRED_METRICS:
                if not all(metric in m.values for ms in per_arm.values() for m in ms):
                    continue
                for p in paired_table(per_arm, metric, cfg.confidence):
                    paired.append({"budget": b, **p.to_dict()})
    subsets_info = [{"budget": s.budget.key, "repeat": s.repeat, "n_train": len(s.train), "n_val": len(s.val),
                     "train_sha256": s.manifest.train_sha256, "val_sha256": s.manifest.val_sha256,
                     "train_pool": s.manifest.train_pool, "val_pool": s.manifest.val_pool,
                     "lacking_train": s.manifest.lacking_train, "lacking_val": s.manifest.lacking_val} for s in subsets]
    test_info = {"n_images": int(len(data.test_rows)), "n_patients": int(np.unique(data.patients[data.test_rows]).size),
                 "labels": spec.test_labels, "n_bootstrap": cfg.n_bootstrap,
                 "positives": _positives(data.test), "sha256": _sha(data.image_ids[data.test_rows].tolist())}
    return TransferResult(
        task={**spec.to_dict(), "views": spec.views if cfg.views is None else cfg.views,
              "label_notes": list(data.label_notes)},
        class_names=names, arms=[a.to_dict() for a in arms], budgets=budgets, repeats=cfg.repeats,
        config=to_dict(cfg), subsets=subsets_info, cells=out_cells, summaries=summaries, paired=paired,
        test=test_info, environment=_environment(corpus))


def _positives(labels: TaskLabels) -> dict[str, int]:
    if labels.schema.kind.is_categorical:
        return {n: int(((labels.y == k) & labels.mask).sum()) for k, n in enumerate(labels.class_names)}
    return {n: int(((labels.y[:, k] == 1) & labels.mask[:, k]).sum()) for k, n in enumerate(labels.class_names)}


def _environment(corpus: Corpus) -> dict[str, Any]:
    """Where the numbers came from: float results differ between CPU models, so say which."""
    from radpair.evaluation.run_figures import machine_info

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import platform

    return {"corpus": str(corpus.root), "corpus_seed": corpus.meta.get("seed"), "cpu": cpu or platform.processor(),
            "threads": torch.get_num_threads(), **machine_info().__dict__}


__all__ = ["TaskData", "encoder_features", "load_task_data", "make_subsets", "run_transfer"]
