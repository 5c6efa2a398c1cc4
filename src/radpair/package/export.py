"""``export_package``: one trained downstream model -> a self-contained, verifiable folder.

The folder is written beside its destination and moved into place only when complete, so
an interrupted export never leaves a folder that looks like a package.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from radpair.errors import ConfigError, DataError
from radpair.package import card as C
from radpair.package import files as F
from radpair.package.sources import Source, method_source, transfer_source

Log = Callable[[str], None]


def export_package(out: str | Path, *, transfer_run: str | Path | None = None, arm: str | None = None,
                   budget: str | None = None, repeat: int | None = None, pretraining_run: str | Path | None = None,
                   task: str | None = None, corpus: str | Path | None = None, encoder: str | None = None,
                   temperature: bool = True, onnx: bool = False, feature_sample: int = 2000, seed: int = 0,
                   device: str = "cpu", batch_size: int = 64, overwrite: bool = False, log: Log = print) -> Path:
    """Write a model package to ``out`` and return its path.

    From a transfer run (``transfer_run`` + ``arm``; the cell with the most labels unless
    ``budget``/``repeat`` say which), or a pretraining run whose method has its own image
    classifier (``pretraining_run``). ``corpus`` overrides the corpus folder the run
    recorded (needed for temperature scaling and the feature statistics).
    """
    out = Path(out)
    if (transfer_run is None) == (pretraining_run is None):
        raise ConfigError("export from either a transfer run (--transfer RUN --arm ARM) or a pretraining run "
                          "(--pretrain RUN), not both or neither")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: exists and is not empty (use --overwrite to replace it)")
    if transfer_run is not None:
        if not arm:
            raise ConfigError("--arm is required with a transfer run (e.g. --arm random:linear)")
        src = transfer_source(transfer_run, arm, budget=budget, repeat=repeat, corpus=corpus, encoder=encoder, log=log)
    else:
        src = method_source(pretraining_run, corpus=corpus, task=task, device=device, batch_size=batch_size, log=log)
    src.model.to(device).eval()
    thresholds = _thresholds(src)
    calibration: dict[str, Any] = {"fitted": False, "temperature": 1.0}
    if temperature and src.validation is not None:
        from radpair.package.calibration import fit_temperature, map_thresholds

        v = src.validation
        fit = fit_temperature(v.probs, v.y, v.mask, src.categorical)
        calibration = {"fitted": True, **fit.to_dict(), "split": v.split}
        src.model.temperature.fill_(fit.temperature)
        if thresholds is not None and fit.temperature != 1.0:
            thresholds["uncalibrated_values"] = thresholds["values"]
            thresholds["values"] = map_thresholds(thresholds["values"], fit.temperature)
            thresholds["note"] = "mapped through the temperature: the same decisions as the uncalibrated model"
        log(f"[export] temperature {fit.temperature:.3f} on {len(v.probs)} validation "
            f"images: ECE {_r(fit.ece_before)} -> {_r(fit.ece_after)}")
    elif temperature:
        log("[export] no validation outputs here (corpus not found): no temperature scaling")
    from radpair.package.preprocessing import Preprocessing

    prep = Preprocessing.from_input_record(src.input_record, src.corpus.meta if src.corpus is not None else None,
                                           src.views)
    stats = _feature_stats(src, feature_sample, seed, device, batch_size, log)

    _replace_atomically(out, lambda tmp: _write(tmp, out.name, src, prep, thresholds, calibration, stats, onnx, log))
    log(f"[export] model package: {out}")
    return out


def _thresholds(src: Source) -> dict[str, Any] | None:
    if src.categorical:
        return None
    if src.thresholds is not None:
        return dict(src.thresholds)
    if src.validation is None:
        raise DataError("the run saved no decision thresholds and its validation images are not at hand to choose "
                        "them; pass the corpus folder (--corpus)")
    from radpair.evaluation.taskmetrics import choose_thresholds

    v = src.validation
    th = choose_thresholds(v.kind, v.y, v.mask, v.probs)
    return {"values": [float(x) for x in th.values], "source": th.source, "split": v.split,
            "chosen_on": "validation labels (F1-maximising), chosen at export"}


def _feature_stats(src: Source, sample: int, seed: int, device: str, batch_size: int, log: Log):
    from radpair.package.ood import fit_feature_stats

    if src.corpus is None or src.train_rows is None or sample <= 0 or len(src.train_rows) < 4:
        log("[export] no training images at hand: no out-of-distribution statistics")
        return None
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(src.train_rows, size=min(sample, len(src.train_rows)), replace=False))
    image_index = src.corpus.index["image_index"].to_numpy(dtype=np.int64)[rows]
    from radpair.data.tensors import images_to_tensor

    feats = []
    with torch.inference_mode():
        for s in range(0, len(rows), batch_size):
            x = images_to_tensor(src.corpus.read_images(image_index[s:s + batch_size])).to(device)
            _, f = src.model.predict(x)
            if f is None:
                log("[export] the model exposes no pooled features: no out-of-distribution statistics")
                return None
            feats.append(f.float().cpu().numpy())
    return fit_feature_stats(np.concatenate(feats), seed)


def _write(root: Path, name: str, src: Source, prep, thresholds, calibration, stats, onnx: bool, log: Log) -> None:
    from radpair import __version__
    from radpair.models.export import save_encoder_weights

    model = src.model.cpu()
    save_encoder_weights(model, root / F.WEIGHTS, {"format": F.FORMAT, "kind": src.kind})
    config = {"format": F.FORMAT, "version": F.VERSION, "kind": src.kind, "n_outputs": model.n_outputs,
              "categorical": model.categorical, **src.architecture}
    F.write_json(root / F.CONFIG, config)
    F.write_json(root / F.PREPROCESSING, prep.to_dict())
    labels = {"class_names": src.class_names, "categorical": src.categorical, "task_kind": src.task.get("schema"),
              "decision": "argmax" if src.categorical else "probability >= threshold",
              "thresholds": thresholds, "temperature": calibration}
    F.write_json(root / F.LABELS, labels)
    if stats is not None:
        stats.save(root / F.FEATURES)
    if src.tokenizer_dir is not None:
        shutil.copytree(src.tokenizer_dir, root / F.TOKENIZER)
    onnx_info = None
    if onnx:
        from radpair.generation.runs import can_generate
        from radpair.package.onnx import export_onnx

        method = getattr(model, "method", None)
        if method is not None and can_generate(method):
            raise ConfigError("--onnx: this model writes a report before it classifies (a decoding loop with a "
                              "data-dependent stop), which an ONNX graph of one forward pass cannot hold; export "
                              "without --onnx")

        onnx_info = export_onnx(model, prep.size, root / F.ONNX)
        log(f"[export] ONNX graph: {root / F.ONNX}" + (f" (max |onnx - torch| {onnx_info['max_abs_diff_vs_torch']:.2e})"
                                                       if onnx_info.get("max_abs_diff_vs_torch") is not None else ""))
    card = {"format": F.FORMAT, "version": F.VERSION, "name": name, "created": C.now(), "radpair_version": __version__,
            "summary": _summary(src), "kind": src.kind, "class_names": src.class_names,
            "categorical": src.categorical, "task": src.task,
            "model": {**{k: v for k, v in config.items() if k not in ("format", "version")},
                      "n_parameters": int(sum(p.numel() for p in model.parameters()))},
            "training_data": {**src.training_data, "synthetic": bool(prep.expected.get("bits") == [8]
                                                                     and src.corpus is not None
                                                                     and "generator" in src.corpus.meta)},
            "provenance": src.provenance, "preprocessing": prep.to_dict(), "thresholds": thresholds,
            "calibration": calibration,
            "metrics": {"test_rows": C.metric_rows((src.metrics or {}).get("test") or {}), **(src.metrics or {})},
            "ood": None if stats is None else {"distance": "mahalanobis", "covariance": "ledoit-wolf", "n": stats.n,
                                               "percentile": stats.percentile, "threshold": stats.threshold},
            "onnx": onnx_info, "intended_use": C.INTENDED_USE}
    card["limitations"] = C.limitations(card)
    files = F.hash_files(root, exclude=(F.CARD, F.README))
    (root / F.README).write_text(C.readme(card, files))
    card["files"] = F.hash_files(root, exclude=(F.CARD,))
    F.write_json(root / F.CARD, card)


def _r(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _summary(src: Source) -> str:
    p = src.provenance
    if src.kind == "transfer":
        return (f"{p.get('arm_label')} transferred to task {src.task.get('name')!r} with {p.get('n_train')} labels "
                f"(budget {p.get('budget')}, repeat {p.get('repeat')}); outputs {', '.join(src.class_names)}.")
    return (f"The image classifier of method {p.get('method')!r} (pretraining run {p.get('pretraining_run')}); "
            f"outputs {', '.join(src.class_names)}.")


def export_model(out: str | Path, model, class_names: list[str], input_record: dict[str, Any], *,
                 categorical: bool = False, thresholds: list[float] | None = None, feature_stats=None,
                 task: dict[str, Any] | None = None, onnx: bool = False, overwrite: bool = False,
                 log: Log = print) -> Path:
    """Package an in-memory :class:`~radpair.package.model.EncoderHeadModel` (a model trained
    outside a transfer run, or a benchmark's): thresholds as given (default 0.5, said so)."""
    from radpair.package.model import EncoderHeadModel, StandardisedLinear
    from radpair.package.preprocessing import Preprocessing

    if not isinstance(model, EncoderHeadModel) or not isinstance(model.head, StandardisedLinear):
        raise ConfigError("export_model packages an EncoderHeadModel with a linear head; use export_package for runs")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: exists and is not empty (use overwrite=True to replace it)")
    arch = {"image_encoder": {"name": model.encoder.name},
            "head": {"type": "linear", "input": model.head_input, "in_features": int(model.head.mean.numel())}}
    src = Source(model, "transfer", arch, list(class_names), categorical, task or {"name": "custom"}, input_record)
    src.provenance = {"exported_from": "an in-memory model (export_model)"}
    th = None
    if not categorical:
        values = [0.5] * len(class_names) if thresholds is None else [float(t) for t in thresholds]
        th = {"values": values, "split": None, "chosen_on": "given" if thresholds is not None else "default 0.5"}
    prep = Preprocessing.from_input_record(input_record)
    _replace_atomically(out, lambda tmp: _write(tmp, out.name, src, prep, th, {"fitted": False, "temperature": 1.0},
                                                feature_stats, onnx, log))
    return out


def _replace_atomically(out: Path, write) -> None:
    """Write the package into a sibling temporary folder, then swap it in: an interrupted
    export never leaves a half-written package where a loader would find it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
