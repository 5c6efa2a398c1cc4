"""A finished joint-embedding run, loaded for evaluation: images and texts in one space.

A run folder written by ``radpair pretrain`` (or ``radpair demo``) holds ``config.yaml``,
the exported ``image_encoder.safetensors`` and ``text_encoder.safetensors``, and
``checkpoints/``. The encoders come from the exported files; the projection heads (and a
learned temperature), which only the checkpoints hold, come from the checkpoint of the
same step as the export, and that checkpoint's encoder weights must equal the exported
ones, so the heads always belong to the encoders they are used with.

Embedding is deterministic: eval mode (no dropout, batch-norm running statistics), no
gradients, fixed batches, nothing drawn at random; the caller's global RNG is left as it
was. Texts go through the run's section policy (``data.text_sections``), tokenizer and
``text_encoder.max_length``, exactly as in training; prompts can skip the section policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from radpair.errors import ConfigError, DataError
from radpair.transfer.heads import eval_mode

CONFIG_FILE = "config.yaml"
IMAGE_WEIGHTS = "image_encoder.safetensors"
TEXT_WEIGHTS = "text_encoder.safetensors"
_STEP = re.compile(r"^step-(\d+)\.pt$")


@dataclass
class JointRun:
    """A loaded run: ``model`` has ``embed_images(images)`` and ``embed_texts(ids, mask)``."""

    root: Path
    config: dict[str, Any]
    model: nn.Module
    tokenizer: Any
    tokenizer_path: Path
    text_sections: str
    max_length: int
    step: int
    checkpoint: Path
    device: torch.device
    image_size: list[int] | None = None
    input_meta: dict[str, Any] = field(default_factory=dict)
    text_fields: list[tuple[str, int]] = field(default_factory=list)
    """(sections, max_length) of each text field of a method that reads several (Modified
    ConVIRT: FINDINGS and IMPRESSION); a report's embedding is then the mean of its fields'
    projections, as in training. Empty for one-field methods."""

    @property
    def method(self) -> str:
        return str(self.config.get("method", {}).get("name", "?"))

    @property
    def temperature(self) -> float:
        """The run's InfoNCE temperature (learned, when the run learned it)."""
        log_t = getattr(self.model, "log_temperature", None)
        if isinstance(log_t, torch.Tensor):
            return float(log_t.detach().exp().cpu())
        return float(self.config.get("method", {}).get("temperature", 0.1))

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.root), "method": self.method, "step": self.step, "checkpoint": str(self.checkpoint),
                "tokenizer": str(self.tokenizer_path), "text_sections": self.text_sections,
                "max_length": self.max_length, "temperature": self.temperature}


def _read_config(root: Path) -> dict[str, Any]:
    from radpair.config import read_yaml_mapping
    from radpair.models.export import read_safetensors_metadata

    path = root / CONFIG_FILE
    if path.is_file():
        return read_yaml_mapping(path, "run config")
    weights = root / IMAGE_WEIGHTS
    if weights.is_file():  # the export carries the run's config too
        try:
            meta = read_safetensors_metadata(weights)
        except Exception as exc:  # noqa: BLE001 - name the file whatever went wrong
            raise DataError(f"{weights}: cannot read its export metadata ({exc})") from None
        if isinstance(meta.get("config"), dict):
            return meta["config"]
    raise DataError(f"{root}: not a run folder (no {CONFIG_FILE}); pass the output folder of `radpair pretrain`")


def _tokenizer_path(root: Path, config: dict[str, Any], tokenizer: str | Path | None) -> Path:
    if tokenizer is not None:
        path = Path(tokenizer)
        if not path.is_dir():
            raise DataError(f"tokenizer folder {str(path)!r} (--tokenizer) does not exist")
        return path
    text = config.get("text_encoder") or {}
    for key in ("tokenizer", "pretrained"):
        value = text.get(key)
        if not value:
            continue
        path = Path(value)
        for candidate in (path, root / path):  # a relative path: from where training ran, or the run folder
            if candidate.is_dir():
                return candidate
        raise DataError(f"tokenizer folder {value!r} recorded in {root / CONFIG_FILE} (text_encoder.{key}) does not "
                        "exist here; pass the tokenizer the run was trained with (--tokenizer DIR)")
    raise DataError(f"{root / CONFIG_FILE} records no tokenizer (text_encoder.tokenizer is empty); "
                    "pass --tokenizer DIR")


def _weights_file(root: Path, name: str, what: str) -> Path:
    path = root / name
    if not path.is_file():
        raise DataError(f"{root}: no {name} (the {what} exported when `radpair pretrain` finishes); "
                        f"is the run finished, and is it a joint image-text method?")
    return path


def checkpoint_steps(root: Path) -> list[int]:
    """Steps of the readable-by-name checkpoints of a run folder, oldest first."""
    folder = root / "checkpoints"
    return sorted(int(m.group(1)) for p in folder.glob("step-*.pt") if (m := _STEP.match(p.name))) \
        if folder.is_dir() else []


def open_run_and_corpus(run, corpus, tokenizer=None, device="cpu"):
    """(run, corpus, input problems): a run folder or :class:`JointRun`, and a corpus folder or
    :class:`~radpair.data.corpus.Corpus`, opened, with the ways the corpus's images differ
    from the run's training images (each warned about)."""
    from radpair.data.corpus import Corpus

    if not isinstance(run, JointRun):
        run = load_joint_run(run, tokenizer=tokenizer, device=device)
    if not isinstance(corpus, Corpus):
        corpus = Corpus.open(corpus)
    return run, corpus, input_problems(run, corpus)


def _checkpoint_of_step(root: Path, step: int) -> Path:
    folder = root / "checkpoints"
    path = folder / f"step-{step:08d}.pt"
    if path.is_file():
        return path
    found = checkpoint_steps(root)
    raise DataError(f"{path} does not exist: the projection heads are only saved in checkpoints, and the encoders "
                    f"were exported at step {step} (checkpoints present: {found or 'none'})")


def run_parts(run_dir: str | Path):
    """(root, config dict, method config, image encoder config, text encoder config) of a run
    folder; the image encoder's start weights are dropped (the run's own weights replace them)."""
    from radpair.config import from_dict
    from radpair.methods import resolve_method_config
    from radpair.models.config import ImageEncoderConfig, TextEncoderConfig

    root = Path(run_dir)
    if not root.is_dir():
        raise DataError(f"run folder {str(root)!r} does not exist")
    config = _read_config(root)
    method_cfg = resolve_method_config(config.get("method"), "method")
    image_cfg = from_dict(ImageEncoderConfig, config.get("image_encoder"), "image_encoder")
    text_cfg = from_dict(TextEncoderConfig, config.get("text_encoder"), "text_encoder")
    image_cfg.weights = None
    return root, config, method_cfg, image_cfg, text_cfg


def load_joint_run(run_dir: str | Path, tokenizer: str | Path | None = None,
                   device: str | torch.device = "cpu") -> JointRun:
    """Load the encoders, projections and tokenizer of a finished run folder onto ``device``."""
    from radpair.methods import BuildContext, build_method
    from radpair.models.export import load_encoder_weights, read_safetensors_metadata
    from radpair.text import load_tokenizer

    root, config, method_cfg, image_cfg, text_cfg = run_parts(run_dir)
    image_path = _weights_file(root, IMAGE_WEIGHTS, "image encoder")
    text_path = _weights_file(root, TEXT_WEIGHTS, "text encoder")
    tok_path = _tokenizer_path(root, config, tokenizer)
    tok = load_tokenizer(tok_path)

    from safetensors import safe_open

    try:
        with safe_open(str(text_path), framework="pt") as fh:
            key = next((k for k in fh.keys() if k.endswith("word_embeddings.weight")), None)
            trained_vocab = fh.get_slice(key).get_shape()[0] if key else None
    except Exception as exc:  # safetensors raises its own error type, without the path
        raise DataError(f"{text_path}: not a readable safetensors file ({exc})") from None
    if trained_vocab is not None and trained_vocab != len(tok):
        raise DataError(f"tokenizer {str(tok_path)!r} has {len(tok)} tokens but {text_path} was trained with "
                        f"{trained_vocab}: pass the tokenizer the run was trained with (--tokenizer DIR)")

    with torch.random.fork_rng(devices=[]):  # building draws an initialisation we then overwrite
        model = build_method(method_cfg, BuildContext(image_cfg, text_cfg, tok))
    if not (hasattr(model, "embed_images") and hasattr(model, "embed_texts")):
        raise ConfigError(f"{root}: method {method_cfg.name!r} learns no joint image-text embedding "
                          "(it has no embed_images/embed_texts); retrieval and zero-shot need one")
    load_encoder_weights(model.image_encoder, image_path)
    load_encoder_weights(model.text_encoder, text_path)
    try:
        meta = read_safetensors_metadata(image_path)
    except Exception as exc:  # noqa: BLE001 - a corrupt header or non-JSON metadata; name the file
        raise DataError(f"{image_path}: cannot read its export metadata ({exc})") from None
    if "step" not in meta:
        raise DataError(f"{image_path}: export metadata has no 'step'; export it with `radpair pretrain` "
                        "so the matching checkpoint (projection heads, temperature) can be found")
    step = int(meta["step"])
    ckpt_path = _checkpoint_of_step(root, step)
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = state["model"]
    except Exception as exc:  # truncated zip, missing key, bad pickle opcode
        raise DataError(f"{ckpt_path}: not a readable radpair checkpoint ({type(exc).__name__}: {exc})") from None
    own = model.state_dict()
    for name, tensor in saved.items():
        if name.startswith(("image_encoder.", "text_encoder.")) and name in own:
            if own[name].shape != tensor.shape or not torch.equal(own[name], tensor.to(own[name].dtype)):
                raise DataError(f"{ckpt_path}: its {name} differs from the exported encoder ({image_path.name}, "
                                f"{text_path.name}); the export and the checkpoint belong to different runs")
    heads = {k: v for k, v in saved.items() if not k.startswith(("image_encoder.", "text_encoder."))}
    missing = [k for k in own if not k.startswith(("image_encoder.", "text_encoder.")) and k not in heads]
    if missing:
        raise DataError(f"{ckpt_path}: lacks {missing[:4]} (the projection heads of method {method_cfg.name!r})")
    try:
        model.load_state_dict(heads, strict=False)
    except RuntimeError as exc:
        why = str(exc).splitlines()[-1].strip()
        raise DataError(f"{ckpt_path}: heads do not fit the run's config ({why})") from None
    dev = torch.device(device)
    model.to(dev).eval()
    data = config.get("data") or {}
    sections, max_length = str(data.get("text_sections", "full")), int(text_cfg.max_length)
    from radpair.methods import method_needs

    fields = method_needs(method_cfg).text_fields
    several: list[tuple[str, int]] = []
    if len(fields) == 1:  # the method's own text field (e.g. TIMNet reads FINDINGS) decides
        sections = fields[0].sections or sections
        max_length = fields[0].max_length or max_length
    elif len(fields) > 1:
        several = [(f.sections or sections, f.max_length or max_length) for f in fields]
        sections = "+".join(f.sections or sections for f in fields)  # what a report's text is, for hits
    return JointRun(root=root, config=config, model=model, tokenizer=tok, tokenizer_path=tok_path,
                    text_sections=sections, max_length=max_length, text_fields=several,
                    step=step, checkpoint=ckpt_path, device=dev, image_size=meta.get("image_size"),
                    input_meta=meta)


class _ImageTower(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed_images(images)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def input_problems(run: JointRun, corpus) -> list[str]:
    """Ways in which ``corpus``'s images are prepared differently from the run's training
    images (size, normalisation, pixel scaling); each is warned about and recorded."""
    import warnings

    from radpair.models.export import input_mismatches

    problems = input_mismatches(run.input_meta, corpus)
    for problem in problems:
        warnings.warn(f"{corpus.root} differs from the training images of {run.root}: {problem}", stacklevel=2)
    return problems


def embed_images(run: JointRun, corpus, rows: Sequence[int] | np.ndarray, batch_size: int = 256,
                 progress: bool = False, normalise: bool = True) -> np.ndarray:
    """(N, D) L2-normalised (``normalise=False``: raw) image embeddings of corpus image rows
    ``rows`` (``image_index`` values)."""
    from radpair.evaluation.features import extract_features

    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros((0, 0), dtype=np.float32)
    out = extract_features(_ImageTower(run.model), corpus.images, batch_size=batch_size, device=run.device,
                           indices=rows, progress=progress)
    return l2_normalise(out) if normalise else np.asarray(out, dtype=np.float32)


def text_tokens(run: JointRun, texts: Sequence[str], sections: bool = True):
    """:class:`~radpair.data.pairs.TokenTable` of ``texts`` as the run tokenised its text field."""
    from radpair.data.pairs import tokenize_texts

    return tokenize_texts(list(texts), run.tokenizer, run.max_length, run.text_sections if sections else "full")


def embed_tokens(run: JointRun, tokens, batch_size: int = 256, normalise: bool = True) -> np.ndarray:
    """(N, D) L2-normalised (``normalise=False``: raw) text embeddings of a token table."""
    n = len(tokens.lengths)
    chunks: list[np.ndarray] = []
    with eval_mode(run.model), torch.inference_mode():
        for start in range(0, n, batch_size):
            items = np.arange(start, min(n, start + batch_size))
            ids, mask = tokens.batch(items)
            emb = run.model.embed_texts(ids.to(run.device), mask.to(run.device))
            chunks.append(emb.float().cpu().numpy())
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    out = np.concatenate(chunks, axis=0)
    return l2_normalise(out) if normalise else out


def held_out_pairs(run: JointRun, corpus, split: str, views: Sequence[str] | None, what: str):
    """The image-report pairs of ``split`` a run can be evaluated on: (split name, rows of the
    corpus index, each row's text under the run's section policy, usable mask). A pair is
    usable when the text the run reads is not empty (for a several-field method: every
    field), as in training. Fewer than two usable pairs is a :class:`DataError`."""
    from radpair.data.pairs import select_report_text
    from radpair.tasks import resolve_split

    split_name = resolve_split(corpus, split)
    rows = corpus.split_index(split_name)
    if views:
        rows = rows[rows["view"].astype(str).isin(list(views))]
        if rows.empty:
            raise DataError(f"{corpus.root}: split {split_name!r} has no pairs with views {list(views)}")
    reports = rows["report"].astype(str).tolist()
    selected = np.array(select_report_text(reports, run.text_sections), dtype=object)
    usable = np.array([bool(t.strip()) for t in selected], dtype=bool)
    for sections, _ in run.text_fields:
        usable &= np.array([bool(t.strip()) for t in select_report_text(reports, sections)], dtype=bool)
    if usable.sum() < 2:
        raise DataError(f"{corpus.root}: split {split_name!r} has {int(usable.sum())} pairs with a non-empty text "
                        f"under section policy {run.text_sections!r}; {what} needs at least 2")
    return split_name, rows, selected, usable


def report_embeddings(run: JointRun, reports: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """(N, D) L2-normalised embeddings of whole reports as the run trained on them: the
    selected text of its one field, or the mean of its fields' projections."""
    from radpair.data.pairs import tokenize_texts

    if not run.text_fields:
        return embed_tokens(run, text_tokens(run, reports, sections=True), batch_size)
    parts = [embed_tokens(run, tokenize_texts(list(reports), run.tokenizer, length, sections), batch_size,
                          normalise=False) for sections, length in run.text_fields]
    return l2_normalise(np.mean(parts, axis=0))


def embed_texts(run: JointRun, texts: Sequence[str], batch_size: int = 256, sections: bool = True) -> np.ndarray:
    """(N, D) L2-normalised embeddings of report texts (``sections=False``: prompts, read whole)."""
    return embed_tokens(run, text_tokens(run, texts, sections), batch_size)


def text_keys(run: JointRun, texts: Sequence[str], sections: bool = True) -> np.ndarray:
    """(N,) integer codes, equal exactly when two reports' texts are identical after the run's
    section policy (``sections=False``: texts already selected) and its tokenizer's
    normalisation (case, accents, control characters), runs of whitespace counting as one
    space. Truncation to ``max_length`` is not applied: texts that differ only beyond it
    embed identically and are scored as ties, not as matches."""
    import pandas as pd

    from radpair.data.pairs import select_report_text

    selected = select_report_text(list(texts), run.text_sections) if sections else list(texts)
    backend = getattr(run.tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None) if backend is not None else None
    if normalizer is not None:
        norm = [" ".join(normalizer.normalize_str(t).split()) for t in selected]
    else:
        norm = [" ".join(t.split()) for t in selected]
    codes, _ = pd.factorize(pd.Series(norm, dtype=object))
    return codes.astype(np.int64)


__all__ = ["save_result", "JointRun", "input_problems", "embed_images", "embed_texts", "embed_tokens", "l2_normalise",
           "load_joint_run", "text_keys", "text_tokens"]


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN / inf floats as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def save_result(out: str | Path, stem: str, data: dict[str, Any], markdown: str) -> dict[str, Path]:
    """``<out>/<stem>.json`` (strict JSON) and ``<out>/<stem>.md``, for every evaluation result."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    paths["json"].write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(markdown)
    return paths
