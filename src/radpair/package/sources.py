"""What a package is made from: one transfer cell (an arm's encoder and head at one budget
and repeat), or a pretraining run whose method has its own image classifier.

Both end as a :class:`Source`: the model, its label names, how its training images were
prepared, and the validation outputs the thresholds and temperature are chosen on. The
test split is read only for the metrics the transfer run already reported; nothing here
is chosen on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from radpair.errors import ConfigError, DataError, unknown_choice_message
from radpair.package.model import EncoderHeadModel, MethodModel, PackagedModel, StandardisedLinear

Log = Callable[[str], None]


@dataclass
class Validation:
    """Outputs on the validation images and their labels: what thresholds and T are fit on."""

    probs: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    split: str  # the corpus split they come from (always the task's validate split)
    image_ids: list[str]
    kind: str


@dataclass
class Source:
    model: PackagedModel
    kind: str  # transfer | method
    architecture: dict[str, Any]
    class_names: list[str]
    categorical: bool
    task: dict[str, Any]
    input_record: dict[str, Any]
    corpus: Any = None  # radpair.data.corpus.Corpus, when it can be opened here
    views: list[str] | None = None
    thresholds: dict[str, Any] | None = None
    validation: Validation | None = None
    train_rows: np.ndarray | None = None  # corpus image rows of the training split (feature statistics)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    tokenizer_dir: Path | None = None


# ---- transfer runs ------------------------------------------------------------------------------
def _find_file(value: str | None, *bases: Path) -> Path | None:
    if not value:
        return None
    p = Path(value)
    for cand in [p, *(b / p for b in bases)]:
        if cand.is_file():
            return cand
    return None


def _task_spec(task: dict[str, Any]):
    from radpair.config import from_dict
    from radpair.tasks.spec import TaskSpec

    known = set(TaskSpec.__dataclass_fields__)
    return from_dict(TaskSpec, {k: v for k, v in task.items() if k in known}, "task")


def _pick_cell(result, arm: str, budget: str | None, repeat: int | None):
    cells = [c for c in result.cells if c.arm == arm]
    if budget is not None:
        from radpair.transfer.subsets import Budget

        key = Budget.parse(budget).key
        cells = [c for c in cells if c.budget == key]
        if not cells:
            raise ConfigError(unknown_choice_message("budget", str(budget), sorted({c.budget for c in result.cells
                                                                                   if c.arm == arm})))
    if repeat is not None:
        cells = [c for c in cells if c.repeat == int(repeat)]
        if not cells:
            raise ConfigError(f"arm {arm!r} has no repeat {repeat} at budget {budget or 'any'}")
    if not cells:
        raise DataError(f"arm {arm!r} has no finished cell in this run")
    most = max(c.n_train for c in cells)
    cells = [c for c in cells if c.n_train == most]

    def val_score(c) -> float:  # the repeat whose chosen setting scored best on validation
        scores = [r.get("val_score") for r in c.selection if all(r.get(k) == v for k, v in c.chosen.items())]
        return float(scores[0]) if scores and scores[0] is not None else float("-inf")

    return sorted(cells, key=lambda c: (-val_score(c), c.repeat))[0]


def _resolve_arm(result, arm: str) -> dict[str, Any]:
    for a in result.arms:
        if arm in (a["key"], a["label"]):
            return a
    raise ConfigError(unknown_choice_message("arm", arm, [a["key"] for a in result.arms]))


def _infer_arch(state: dict[str, torch.Tensor], prefix: str) -> str:
    """The registered encoder whose parameter names and shapes match ``state`` (when the
    start's weights file, which names its architecture, is not at hand)."""
    from radpair.models.image_encoders import IMAGE_ENCODERS

    have = {k[len(prefix):]: tuple(v.shape) for k, v in state.items() if k.startswith(prefix)}
    for name in IMAGE_ENCODERS.names():
        with torch.random.fork_rng(devices=[]):
            enc = IMAGE_ENCODERS.build(name)
        if {k: tuple(v.shape) for k, v in enc.state_dict().items()} == have:
            return name
    raise DataError(f"the saved encoder matches no registered image encoder ({len(have)} tensors)")


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    from radpair.models.export import read_safetensors_metadata

    try:
        return load_file(str(path)), read_safetensors_metadata(path)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types
        raise DataError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def _transfer_model(protocol: str, weights: Path, start: dict[str, Any], run_dir: Path, seed: int,
                    n_out: int, categorical: bool, encoder_file: str | None) -> tuple[PackagedModel, dict[str, Any]]:
    from radpair.models.export import read_safetensors_metadata
    from radpair.transfer.heads import build_start_encoder

    state, meta = _read_state(weights)
    start_file = _find_file(encoder_file or start.get("weights"), run_dir, run_dir.parent)
    if start.get("weights") is None and not encoder_file:
        arch = start.get("arch") or "resnet_tiny"
    elif start_file is not None:
        arch = read_safetensors_metadata(start_file)["config"]["image_encoder"]["name"]
    else:
        arch = None
    if protocol == "finetune":
        arch = arch or _infer_arch(state, "encoder.")
        from radpair.models.image_encoders import IMAGE_ENCODERS

        with torch.random.fork_rng(devices=[]):
            encoder = IMAGE_ENCODERS.build(arch)
        head = StandardisedLinear(encoder.out_dim, n_out)
        model = EncoderHeadModel(encoder, head, "pooled", n_out, categorical)
        enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        encoder.load_state_dict(enc_state, strict=True)
        head.linear.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]}, strict=True)
        return model, {"image_encoder": {"name": arch}, "head": {"type": "linear", "input": "pooled",
                                                                 "in_features": encoder.out_dim}}
    # frozen protocols: the start encoder itself, with the saved head
    if start.get("weights") is not None and start_file is None:
        raise DataError(f"{weights}: the arm's start encoder {start.get('weights')!r} is not found here; pass the "
                        "file the transfer run started from (--encoder FILE)")
    encoder = build_start_encoder(str(start_file) if start_file else None, arch, seed)
    d = encoder.out_dim
    if "conv.weight" in state:  # TIMNet's shallow head on the feature map
        from radpair.transfer.heads import TimnetHead

        settings = meta.get("protocol_settings") or {}
        channels, hidden = int(settings.get("timnet_channels", 256)), int(settings.get("timnet_hidden", 512))
        head = TimnetHead(d, n_out, channels, hidden)
        head.load_state_dict(state, strict=True)
        model = EncoderHeadModel(encoder, head, "map", n_out, categorical)
        return model, {"image_encoder": {"name": arch}, "head": {"type": "timnet", "input": "map", "in_features": d,
                                                                 "channels": channels, "hidden": hidden}}
    head = StandardisedLinear(d, n_out)
    w = state["weight"]
    if protocol == "linear":  # LinearModel stores (D, O) on standardised features
        w = w.T
    head.mean.copy_(state["mean"].float())
    head.scale.copy_(state["scale"].float())
    head.linear.weight.data.copy_(w.float())
    head.linear.bias.data.copy_(state["bias"].float())
    model = EncoderHeadModel(encoder, head, "pooled", n_out, categorical)
    if "constant_mask" in state:
        model.constant_mask.copy_(state["constant_mask"].float())
        model.constant_value.copy_(state["constant_value"].float())
    return model, {"image_encoder": {"name": arch}, "head": {"type": "linear", "input": "pooled", "in_features": d}}


def _open_corpus(path: str | Path | None, log: Log):
    from radpair.data.corpus import Corpus

    if not path:
        return None
    try:
        return Corpus.open(path)
    except DataError as exc:
        log(f"warning: corpus {path} cannot be opened here ({exc}); no validation refit, temperature or feature "
            "statistics")
        return None


def _rows_for_ids(corpus, ids: list[str], where: str) -> np.ndarray:
    pos = {i: k for k, i in enumerate(corpus.index["image_id"].astype(str))}
    missing = [i for i in ids if i not in pos]
    if missing:
        raise DataError(f"{where}: {len(missing)} image ids are not in corpus {corpus.root} (e.g. {missing[:3]})")
    return np.array([pos[i] for i in ids], dtype=np.int64)


def transfer_source(run_dir: str | Path, arm: str, *, budget: str | None = None, repeat: int | None = None,
                    corpus: str | Path | None = None, encoder: str | None = None, log: Log = print) -> Source:
    """The model of one cell of a transfer run (``results.json`` + ``cells/``)."""
    from radpair.tasks import resolve_split, task_labels
    from radpair.transfer.results import TransferResult
    from radpair.transfer.subsets import Budget, SubsetManifest

    run = Path(run_dir)
    result = TransferResult.load(run / "results.json")
    a = _resolve_arm(result, arm)
    cell = _pick_cell(result, a["key"], budget, repeat)
    from radpair.transfer.arms import Arm, Protocol, Start

    arm_obj = Arm(Start(a["start"]["name"], a["start"].get("weights"), a["start"].get("arch") or "resnet_tiny"),
                  Protocol.parse(a["protocol"]))
    folder = run / "cells" / arm_obj.dir_name / f"{Budget.parse(cell.budget).file_key}-r{cell.repeat}"
    weights = run / cell.files["weights"] if cell.files.get("weights") else None
    if weights is None or not weights.is_file():
        cand = [folder / n for n in ("model.safetensors", "head.safetensors") if (folder / n).is_file()]
        if not cand:
            raise DataError(f"{folder}: no saved head or model (was the transfer run made with save_models off?)")
        weights = cand[0]
    _, meta = _read_state(weights)
    names = list(meta.get("class_names") or result.class_names)
    categorical = (meta.get("schema") or {}).get("kind", result.task.get("schema")) in ("multiclass", "ordinal")
    seed = int(result.config.get("seed", 0))
    model, arch = _transfer_model(a["protocol"], weights, a["start"], run, seed, len(names), categorical, encoder)
    model.eval()
    views = result.task.get("views") or None
    src = Source(model, "transfer", arch, names, categorical, result.task, meta.get("input") or {}, views=views)
    src.provenance = {"transfer_run": str(run.resolve()), "arm": a["key"], "arm_label": a["label"],
                      "budget": cell.budget, "repeat": cell.repeat, "n_train": cell.n_train, "n_val": cell.n_val,
                      "chosen": cell.chosen, "weights": str(weights.relative_to(run)), "protocol": a["protocol"],
                      "start": a["start"]}
    src.metrics = {"test": cell.metrics, "test_set": result.test,
                   "over_repeats": [s for s in result.summaries if s["arm"] == a["key"] and s["budget"] == cell.budget]}
    src.training_data = {"corpus": result.environment.get("corpus"), "corpus_seed": result.environment.get("corpus_seed"),
                         "task": result.task.get("name"), "train_labels": result.task.get("train_labels"),
                         "views": views, "subset": cell.subset, "test_sha256": result.test.get("sha256"),
                         "n_train_labelled": cell.n_train, "n_validation": cell.n_val}
    # thresholds exactly as the transfer protocol chose them on validation labels
    th_file = folder / "thresholds.json"
    if th_file.is_file():
        th = json.loads(th_file.read_text())
        src.thresholds = {"values": th["values"], "source": th.get("source"), "chosen_on": th.get("chosen_on"),
                          "split": "validate", "from": str(th_file.relative_to(run))}
    elif cell.thresholds is not None:
        src.thresholds = {"values": cell.thresholds, "chosen_on": "validation labels (F1-maximising)",
                          "split": "validate", "from": "results.json"}
    corp = _open_corpus(corpus or result.environment.get("corpus"), log)
    src.corpus = corp
    if corp is None:
        return src
    spec = _task_spec(result.task)
    manifest_file = run / "manifests" / f"{Budget.parse(cell.budget).file_key}-r{cell.repeat}.json"
    manifest = SubsetManifest.load(manifest_file)
    val_rows = _rows_for_ids(corp, manifest.val_ids, str(manifest_file))
    split = resolve_split(corp, spec.validate_split)
    bad = corp.index["split"].astype(str).to_numpy()[val_rows] != split
    if bad.any():  # never let a threshold or temperature be chosen on anything but validate
        raise DataError(f"{manifest_file}: {int(bad.sum())} validation ids are not in split {split!r} of {corp.root}")
    labels = task_labels(corp, spec, spec.train_labels, val_rows)
    with np.load(folder / "predictions.npz") as z:
        val_probs = z["val"].astype(np.float64)
    if len(val_probs) != len(val_rows):
        raise DataError(f"{folder / 'predictions.npz'}: {len(val_probs)} validation outputs for {len(val_rows)} ids")
    src.validation = Validation(val_probs, labels.y, labels.mask, split, list(manifest.val_ids), labels.kind)
    train_split = resolve_split(corp, spec.train_split)
    keep = corp.index["split"].astype(str).to_numpy() == train_split
    if views:
        keep &= corp.index["view"].astype(str).isin(views).to_numpy()
    src.train_rows = np.flatnonzero(keep)
    return src


# ---- pretraining runs with their own classifier --------------------------------------------------
def method_source(run_dir: str | Path, *, corpus: str | Path | None = None, task: str | None = None,
                  device: str = "cpu", batch_size: int = 64, log: Log = print) -> Source:
    """A finished pretraining run whose method declares an image classifier of its own."""
    from radpair.evaluation.joint import _tokenizer_path, run_parts
    from radpair.evaluation.own_classifier import classifier_inputs, load_trained_method
    from radpair.methods import method_needs
    from radpair.tasks import load_task, resolve_split, task_labels

    run = Path(run_dir)
    model, config = load_trained_method(run, device)
    if "image" not in classifier_inputs(model):
        raise ConfigError(f"{run}: method {type(model).__name__} has no classifier that reads the image alone; "
                          "transfer its encoder (radpair transfer) and export an arm of that run instead")
    root, _, method_cfg, image_cfg, text_cfg = run_parts(run)
    needs = method_needs(method_cfg)
    need = needs.labels
    task_name = task or (need.task if need is not None and need.task else None)
    if task_name:
        spec = load_task(task_name)
        if need is not None and need.source and not task:
            spec = spec.with_sources(need.source, None)
    elif need is not None and need.columns:
        from radpair.tasks.spec import TaskSpec

        spec = TaskSpec(name="labels", schema="multilabel", columns=list(need.columns),
                        train_labels=need.source or "truth")
    else:
        raise ConfigError(f"{run}: the method declares no labels; name the task its classifier predicts (--task)")
    categorical = spec.kind.is_categorical
    names = list(spec.levels) if categorical else spec.output_columns
    wrapped = MethodModel(model, len(names), categorical).eval()
    tok_dir = _tokenizer_path(root, config, None) if needs.needs_text else None
    from radpair.config import to_dict

    arch = {"method": to_dict(method_cfg), "image_encoder": to_dict(image_cfg), "text_encoder": to_dict(text_cfg)}
    if tok_dir is not None:
        arch["tokenizer"] = "tokenizer"
        arch["text_encoder"]["tokenizer"] = "tokenizer"
    meta_input = {}
    from radpair.models.export import read_safetensors_metadata

    enc_file = run / "image_encoder.safetensors"
    if enc_file.is_file():
        meta_input = read_safetensors_metadata(enc_file).get("input") or {}
    corp = _open_corpus(corpus or (config.get("data") or {}).get("corpus"), log)
    if not meta_input and corp is not None:
        from radpair.models.export import input_record

        meta_input = input_record(corp)
    views = spec.views or None
    src = Source(wrapped, "method", arch, names, categorical, spec.to_dict(), meta_input, corpus=corp, views=views,
                 tokenizer_dir=tok_dir)
    src.provenance = {"pretraining_run": str(run.resolve()), "method": method_cfg.name,
                      "classifier": "classify_inputs(image)" if getattr(model, "classifier_inputs", None) is not None
                      else "predict(images)"}
    src.training_data = {"corpus": (config.get("data") or {}).get("corpus"), "task": spec.name,
                         "train_labels": spec.train_labels, "views": views}
    if corp is None:
        return src
    index = corp.index
    split_col = index["split"].astype(str).to_numpy()
    keep = np.ones(len(index), dtype=bool)
    if views:
        keep &= index["view"].astype(str).isin(views).to_numpy()
    split = resolve_split(corp, spec.validate_split)
    rows = np.flatnonzero(keep & (split_col == split))
    labels = task_labels(corp, spec, spec.train_labels, rows)
    usable = labels.usable_rows
    rows, labels = rows[usable], labels.take(np.flatnonzero(usable))
    if len(rows):
        probs = _model_probs(wrapped, corp, rows, batch_size, device)
        src.validation = Validation(probs, labels.y, labels.mask, split,
                                    index["image_id"].astype(str).to_numpy()[rows].tolist(), labels.kind)
    src.train_rows = np.flatnonzero(keep & (split_col == resolve_split(corp, spec.train_split)))
    return src


def _model_probs(model: PackagedModel, corpus, rows: np.ndarray, batch_size: int, device: str) -> np.ndarray:
    from radpair.data.tensors import images_to_tensor

    image_index = corpus.index["image_index"].to_numpy(dtype=np.int64)[rows]
    out = []
    with torch.inference_mode():
        for s in range(0, len(rows), batch_size):
            x = images_to_tensor(corpus.read_images(image_index[s:s + batch_size])).to(device)
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)
