"""How a new image must be prepared to look like the images the model was trained on.

``preprocessing.json`` is written from the export's input record (the corpus the model
was trained on): square size and fit, the normalisation spec ``radpair preprocess`` used
(windowing, range fallback, MONOCHROME1 inversion), and the fixed pixel mean/std of
:mod:`radpair.data.tensors`. What the training images were (bit depth, views) is kept too,
so prediction can flag an input that differs in ways resizing does not repair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from radpair.data.io import NormalisationSpec, OutputDType, ResizeSpec
from radpair.errors import DataError


@dataclass
class Preprocessing:
    resize: ResizeSpec
    normalisation: NormalisationSpec
    pixel_mean: float
    pixel_std: float
    expected: dict[str, Any] = field(default_factory=dict)
    """``bits`` (list or None: unknown), ``views`` (list or None), ``source``."""

    @property
    def size(self) -> int:
        return int(self.resize.size)

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": [self.size, self.size], "resize": self.resize.to_dict(),
                "normalisation": self.normalisation.to_dict(), "pixel_mean": self.pixel_mean,
                "pixel_std": self.pixel_std, "tensor": "(uint8 / 255 - pixel_mean) / pixel_std, 1 channel",
                "expected_input": self.expected}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "preprocessing.json") -> "Preprocessing":
        try:
            resize = ResizeSpec(**d["resize"])
            norm = NormalisationSpec.from_dict(d["normalisation"])
            return cls(resize, norm, float(d["pixel_mean"]), float(d["pixel_std"]), dict(d.get("expected_input") or {}))
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: incomplete preprocessing spec ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_input_record(cls, record: dict[str, Any], corpus_meta: dict[str, Any] | None = None,
                          views: list[str] | None = None) -> "Preprocessing":
        """From :func:`radpair.models.export.input_record` (+ the corpus meta when at hand).

        A corpus made by ``radpair synth`` records no resize (its images were drawn at
        size): new images are fitted the way ``radpair preprocess`` does by default."""
        if not record:
            raise DataError("the model records no input record (image size, normalisation); cannot package it")
        size = record.get("image_size") or []
        if len(size) != 2 or size[0] != size[1]:
            raise DataError(f"the model's training images are {size}, not square; radpair prepares square inputs")
        meta = corpus_meta or {}
        resize = dict((meta.get("preprocess") or {}).get("resize") or {})
        resize["size"] = int(size[0])
        norm = record.get("normalisation") or NormalisationSpec().to_dict()
        spec = NormalisationSpec.from_dict(norm)
        if spec.dtype is not OutputDType.UINT8:
            raise DataError(f"normalisation dtype {spec.dtype.value}: radpair models read uint8 images")
        source = record.get("source") or meta.get("source")
        # a synthetic corpus is drawn as 8-bit images; a preprocessed one does not record the
        # bit depth of its sources, so nothing is claimed about it
        bits = [8] if ("generator" in meta or _is_synthetic(source)) else None
        return cls(ResizeSpec(**resize), spec, float(record["pixel_mean"]), float(record["pixel_std"]),
                   {"bits": bits, "views": list(views) if views else None, "source": _describe(source)})

    def to_tensor(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W) -> float32 (B, 1, H, W), scaled as in training."""
        t = torch.from_numpy(np.ascontiguousarray(images))
        return ((t.float() / 255.0 - self.pixel_mean) / self.pixel_std).unsqueeze(1)


def _is_synthetic(source: Any) -> bool:
    text = str(source.get("dataset") or source.get("kind") or "") if isinstance(source, dict) else str(source or "")
    return "synth" in text.lower()


def _describe(source: Any) -> Any:
    if isinstance(source, dict):
        return {k: v for k, v in source.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return source
