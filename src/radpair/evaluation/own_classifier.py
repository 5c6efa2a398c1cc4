"""Score a method's own classifier on a task's test split (the ``joint`` protocol).

Some methods train a classifier with the representation instead of leaving transfer to a
separate head: Chauhan et al.'s image classifier (Eq. 3), TieNet's classifiers. Their
papers report that classifier, so this loads a finished run folder, feeds it every test
image with a usable label and scores it exactly like a transfer cell: the task's metrics
(for ordinal tasks the dichotomised AUCs and macro-F1) with patient-bootstrap CIs.

What the classifier reads is the method's to declare, never guessed from its name:

* ``classifier_inputs`` (a tuple of ``image``, ``report``, ``image+report``) and
  ``classify_inputs(batch, inputs)`` (probabilities) when it can read the report
  (TieNet's R and I+R auto-annotation) or has several classifiers;
* otherwise ``predict(images)``: a classifier of the image alone.

A report is tokenised the way the method's own text field was in training (its section
policy and maximum length, :func:`radpair.data.pairs.tokenize_texts`), so the classifier
sees the text it learnt from. Reports that are empty under that policy are kept (they read
as ``[CLS] [SEP]``): every input setting is scored on the same test images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from radpair.errors import ConfigError, DataError

def load_trained_method(run_dir: str | Path, device: str = "cpu", tokenizer: str | Path | None = None):
    """The method of a finished run folder with its final weights (newest checkpoint), in eval mode."""
    from radpair.evaluation.joint import _tokenizer_path, checkpoint_steps, run_parts
    from radpair.methods import BuildContext, build_method, method_needs
    from radpair.text import load_tokenizer

    root, config, method_cfg, image_cfg, text_cfg = run_parts(run_dir)
    tok = load_tokenizer(_tokenizer_path(root, config, tokenizer)) if method_needs(method_cfg).needs_text else None
    with torch.random.fork_rng(devices=[]):  # building draws an initialisation we then overwrite
        model = build_method(method_cfg, BuildContext(image_cfg, text_cfg, tok))
    steps = checkpoint_steps(root)
    if not steps:
        raise DataError(f"{root}: no checkpoints/step-*.pt; is the run finished?")
    step = exported_step(root)
    if step is not None and step not in steps:
        raise DataError(f"{root}: its exports were written at step {step} but checkpoints/ holds only steps "
                        f"{steps}; the classifier scored must be the exported model's")
    path = root / "checkpoints" / f"step-{(steps[-1] if step is None else step):08d}.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    except Exception as exc:  # noqa: BLE001 - truncated zip, missing key: name the file
        raise DataError(f"{path}: not a readable radpair checkpoint ({type(exc).__name__}: {exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        why = str(exc).splitlines()[-1].strip() or str(exc).splitlines()[0]
        raise DataError(f"{path}: does not fit the run's config ({why})") from None
    return model.to(device).eval(), config


def exported_step(root: Path) -> int | None:
    """The step at which a run wrote its exports (``*.safetensors`` metadata), so that its own
    classifier is scored at the same step its encoder is transferred and its reports written;
    ``None`` when nothing was exported (an unfinished run: the newest checkpoint then)."""
    from radpair.models.export import read_safetensors_metadata

    for path in sorted(Path(root).glob("*.safetensors"), key=lambda p: p.name != "image_encoder.safetensors"):
        try:
            meta = read_safetensors_metadata(path)
        except Exception as exc:  # noqa: BLE001 - a corrupt header; name the file
            raise DataError(f"{path}: cannot read its export metadata ({exc})") from None
        if "step" in meta:
            return int(meta["step"])
    return None


def classifier_inputs(model) -> tuple[str, ...]:
    """The inputs ``model``'s own classifier reads (empty: it has none)."""
    declared = getattr(model, "classifier_inputs", None)
    if declared is not None:
        return tuple(declared)
    return ("image",) if hasattr(model, "predict") else ()


def _classifier(model, inputs: str, run_dir) -> Any:
    """``batch -> probabilities`` reading ``inputs``; a clear error when the method cannot."""
    can = classifier_inputs(model)
    if not can:
        raise ConfigError(f"{run_dir}: method {type(model).__name__} has no classifier of its own (predict); "
                          "transfer its encoder with the linear, frozen-head or finetune protocol instead")
    if inputs not in can:
        raise ConfigError(f"{run_dir}: the classifier of method {type(model).__name__} reads {list(can)}, not "
                          f"{inputs!r} (inputs of the arm)")
    if getattr(model, "classifier_inputs", None) is not None:
        return lambda batch: model.classify_inputs(batch, inputs)
    return lambda batch: model.predict(batch["images"])


def _text_tables(model_cfg: dict, method_cfg, rows: np.ndarray, corpus, tokenizer) -> dict[str, Any]:
    """``{field name: TokenTable}`` of ``rows``' reports, tokenised as the method's text fields."""
    from radpair.data.pairs import tokenize_texts
    from radpair.methods import method_needs

    texts = corpus.index["report"].astype(str).to_numpy()[rows]
    out = {}
    for f in method_needs(method_cfg).text_fields:
        policy = f.sections or (model_cfg.get("data") or {}).get("text_sections") or "full"
        max_length = f.max_length or (model_cfg.get("text_encoder") or {}).get("max_length") or 128
        out[f.name] = tokenize_texts(texts, tokenizer, int(max_length), policy)
    return out


def evaluate_own_classifier(run_dir: str | Path, corpus, task: str, *, test_labels: str | None = None,
                            inputs: str = "image", split: str = "test", n_bootstrap: int = 1000, seed: int = 0,
                            device: str = "cpu", batch_size: int = 256, confidence: float = 0.95,
                            cache: dict | None = None, metrics_out: list | None = None) -> dict[str, Any]:
    """``{"values", "ci", "per_class", "n_positive", "n_test", ...}`` of the run's own classifier
    reading ``inputs`` on ``task``'s ``split`` (``test``, ``validate`` or ``all``: every row,
    for a corpus that is a test set as a whole).

    ``cache``: a dict kept by the caller across calls, so scoring the same run on the same
    images under other labels (NLP-mined, then hand labels) does not decode them again."""
    from radpair.data.corpus import Corpus
    from radpair.evaluation.paired import BootstrapDraws
    from radpair.evaluation.taskmetrics import score_task
    from radpair.tasks import load_task
    from radpair.tasks.spec import resolve_split, task_labels

    model, config = load_trained_method(run_dir, device)
    classify = _classifier(model, inputs, run_dir)
    if not isinstance(corpus, Corpus):
        corpus = Corpus.open(corpus)
    spec = load_task(task).with_sources(None, test_labels)
    index = corpus.index
    keep = np.ones(len(index), dtype=bool)
    if spec.views:
        keep &= index["view"].astype(str).isin(spec.views).to_numpy()
    if split != "all":
        name = {"test": spec.test_split, "validate": spec.validate_split}.get(split, split)
        keep &= (index["split"].astype(str) == resolve_split(corpus, name)).to_numpy()
    rows = np.flatnonzero(keep)
    labels = task_labels(corpus, spec, spec.test_labels, rows, test=True)
    usable = labels.usable_rows
    if not usable.any():
        raise DataError(f"{corpus.root}: no {split} image has a usable {spec.test_labels!r} label for task {task!r}")
    key = (str(Path(run_dir).resolve()), inputs, str(corpus.root), split, tuple(spec.views or ()))
    if cache is not None and key in cache:
        p = cache[key]
    else:
        p = _probabilities(model, config, run_dir, classify, corpus, rows, inputs, device, batch_size)
        if cache is not None:
            cache[key] = p
    rows, labels, p = rows[usable], labels.take(np.flatnonzero(usable)), p[usable]
    names = labels.class_names
    if p.shape[1] != len(names):
        raise DataError(f"{run_dir}: the classifier has {p.shape[1]} outputs but task {task!r} has {len(names)} "
                        f"classes ({names})")
    patients = index["patient_id"].astype(str).to_numpy()[rows]
    draws = BootstrapDraws.draw(patients, n_bootstrap, seed) if n_bootstrap else None
    metrics = score_task(labels.kind, labels.y, labels.mask, p, names, draws=draws, confidence=confidence)
    if metrics_out is not None:  # the TaskMetrics itself, for paired comparisons of two classifiers
        metrics_out.append(metrics)
    out = metrics.to_dict()
    out["n_test"] = int(len(rows))
    out["inputs"] = inputs
    out["split"] = split
    return out


def _probabilities(model, config: dict, run_dir, classify, corpus, rows: np.ndarray, inputs: str, device: str,
                   batch_size: int) -> np.ndarray:
    """(N, C) float64 probabilities of the classifier for corpus ``rows``."""
    from radpair.data.tensors import images_to_tensor
    from radpair.evaluation.joint import _tokenizer_path, run_parts
    from radpair.methods.base import text_keys
    from radpair.text import load_tokenizer

    index = corpus.index
    texts = {}
    if "report" in inputs:
        root, _, method_cfg, _, _ = run_parts(run_dir)
        tok = load_tokenizer(_tokenizer_path(root, config, None))
        texts = _text_tables(config, method_cfg, rows, corpus, tok)
    image_index = index["image_index"].to_numpy(dtype=np.int64)[rows]
    probs = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            part = np.arange(start, min(start + batch_size, len(rows)))
            batch: dict[str, torch.Tensor] = {}
            if "image" in inputs:
                batch["images"] = images_to_tensor(corpus.read_images(image_index[part])).to(device)
            for name, table in texts.items():
                ids, mask = table.batch(part)
                ids_key, mask_key = text_keys(name)
                batch[ids_key], batch[mask_key] = ids.to(device), mask.to(device)
            probs.append(classify(batch).float().cpu().numpy())
    return np.concatenate(probs).astype(np.float64)
