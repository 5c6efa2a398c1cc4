"""What is being explained: a finished run (any method) or a model package, loaded once,
with the capabilities its explanations depend on found by asking the model, never by its
method's name.

A capability is what a model *offers*: a classifier of the image alone (``logits(images)``,
or ``predict(images)`` probabilities), a joint image-text space (``embed_images`` and
``embed_texts``), a BERT text encoder (``text_encoder.bert``), a decoder that writes
reports (``start_decoding``/``decode_step``, :func:`radpair.generation.runs.can_generate`),
an image encoder with a feature map. A new method gets every explanation whose capability
it has, without a line here.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from radpair.errors import ConfigError, DataError


@dataclass
class Subject:
    """A loaded model and what is needed to feed it images and texts."""

    root: Path
    kind: str  # "run" or "package"
    model: nn.Module
    method: str
    config: dict[str, Any]
    image_size: int | None
    to_tensor: Callable[[np.ndarray], torch.Tensor]
    device: torch.device
    tokenizer: Any = None
    text_sections: str = "full"
    max_length: int = 128
    class_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # ---- capabilities ---------------------------------------------------------------------------
    @property
    def image_encoder(self) -> nn.Module | None:
        """The module whose ``feature_map`` every spatial explanation reads."""
        for _, module in self.model.named_modules():
            if callable(getattr(module, "feature_map", None)) and module is not self.model:
                return module
        return None

    def classifier(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], str] | None:
        """``(images -> [B, C] scores, what the score is)`` of a classifier of the image alone,
        differentiable, or None. ``predict`` is often wrapped in ``no_grad`` for inference;
        its undecorated body is the same computation, so it is used with gradients."""
        m = self.model
        if callable(getattr(m, "logits", None)):
            return m.logits, "class logit"
        if getattr(m, "classifier_inputs", None) is not None:
            return None  # several inputs (e.g. writes a report first): not a plain image classifier
        predict = getattr(type(m), "predict", None)
        if predict is None:
            return None
        raw = inspect.unwrap(predict)
        return (lambda x: torch.log(raw(m, x).float().clamp_min(1e-7))), "class log-probability"

    @property
    def joint(self) -> bool:
        return callable(getattr(self.model, "embed_images", None)) and callable(getattr(self.model, "embed_texts", None)) \
            and self.tokenizer is not None and getattr(self.model, "text_encoder", 1) is not None

    @property
    def bert(self) -> nn.Module | None:
        text = getattr(self.model, "text_encoder", None)
        bert = getattr(text, "bert", None)
        return bert if bert is not None and self.tokenizer is not None else None

    @property
    def generates(self) -> bool:
        from radpair.generation.runs import can_generate

        return self.tokenizer is not None and can_generate(self.model)

    def capabilities(self) -> dict[str, bool]:
        return {"classifier": self.classifier() is not None, "joint_embedding": self.joint,
                "bert_text_encoder": self.bert is not None, "writes_reports": self.generates,
                "feature_map": self.image_encoder is not None}

    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """What the t-SNE shows: the joint embedding where there is one, else pooled features."""
        if callable(getattr(self.model, "embed_images", None)):
            return self.model.embed_images(x)
        enc = self.image_encoder
        if enc is None:
            raise ConfigError(f"{self.root}: the model has no image encoder to embed images with")
        return enc.feature_map(x).mean(dim=(2, 3))


def _class_names(method_cfg, n: int | None) -> list[str]:
    labels = getattr(method_cfg, "labels", None)
    if isinstance(labels, (list, tuple)) and labels:
        return [str(x) for x in labels]
    task = getattr(method_cfg, "label_task", None)
    if task:
        try:
            from radpair.tasks.spec import load_task

            levels = list(load_task(task).levels)
            if levels and (n is None or len(levels) == n):
                return [str(x) for x in levels]
        except Exception:  # noqa: BLE001 - names are a convenience; fall back to numbers
            pass
    return [f"class{i}" for i in range(n or 0)]


def is_package(root: Path) -> bool:
    if not (root / "config.json").is_file():
        return False
    try:
        return json.loads((root / "config.json").read_text()).get("kind") in ("transfer", "method")
    except (OSError, ValueError):
        return False


def load_subject(checkpoint: str | Path, device: str = "cpu", tokenizer: str | Path | None = None) -> Subject:
    """A run folder of `radpair pretrain` (newest checkpoint, whole model) or a package of
    `radpair export` (a transfer arm's encoder and head, or a method's own classifier)."""
    root = Path(checkpoint)
    if not root.is_dir():
        raise DataError(f"checkpoint {str(root)!r} is not a folder; pass a run folder (radpair pretrain) or a model "
                        "package (radpair export)")
    dev = torch.device(device)
    if is_package(root):
        from radpair.package.load import load_package

        pkg = load_package(root, device=device)
        model = pkg.model.eval()
        what = (pkg.config.get("method") or {}).get("name") or pkg.config.get("kind", "package")
        return Subject(root=root, kind="package", model=model, method=f"package ({what})", config=dict(pkg.config),
                       image_size=int(pkg.preprocessing.size),
                       to_tensor=pkg.preprocessing.to_tensor, device=dev, class_names=list(pkg.class_names))
    from radpair.data.tensors import images_to_tensor
    from radpair.evaluation.joint import IMAGE_WEIGHTS, _tokenizer_path, run_parts
    from radpair.evaluation.own_classifier import load_trained_method
    from radpair.methods import method_needs
    from radpair.text import load_tokenizer

    _, config, method_cfg, _, text_cfg = run_parts(root)
    model, config = load_trained_method(root, device=device, tokenizer=tokenizer)
    needs = method_needs(method_cfg)
    tok = load_tokenizer(_tokenizer_path(root, config, tokenizer)) if needs.needs_text else None
    data = config.get("data") or {}
    sections, max_length = str(data.get("text_sections", "full")), int(text_cfg.max_length)
    if needs.text_fields:
        f = needs.text_fields[0]
        sections, max_length = f.sections or sections, f.max_length or max_length
    size = None
    weights = root / IMAGE_WEIGHTS
    if weights.is_file():
        from radpair.models.export import read_safetensors_metadata

        try:
            shape = read_safetensors_metadata(weights).get("image_size")
            size = int(shape[0]) if shape else None
        except Exception:  # noqa: BLE001 - the size is a check, the corpus gives it too
            size = None
    n_out = None
    for name in ("classifier", "image_classifier"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            n_out = head.out_features
    return Subject(root=root, kind="run", model=model, method=method_cfg.name, config=config, image_size=size,
                   to_tensor=images_to_tensor, device=dev, tokenizer=tok, text_sections=sections,
                   max_length=max_length, class_names=_class_names(method_cfg, n_out))


__all__ = ["Subject", "load_subject", "is_package"]
