"""Export and import of trained weights as safetensors (no pickle on load)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from radpair.errors import DataError


def save_encoder_weights(module: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Save ``module``'s state dict as safetensors; ``metadata`` is stored as JSON strings."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state, seen = {}, set()
    for k, v in module.state_dict().items():
        v = v.detach().cpu().contiguous()
        if v.data_ptr() in seen:  # a tied weight (a decoder's embedding and output layer): safetensors
            v = v.clone()         # refuses shared storage, so the second name gets its own copy
        seen.add(v.data_ptr())
        state[k] = v
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    save_file(state, str(path), metadata=meta)
    return path


def read_safetensors_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {k: json.loads(v) for k, v in (fh.metadata() or {}).items()}


def load_encoder_weights(module: nn.Module, path: str | Path) -> None:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file {str(path)!r} does not exist")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise DataError(f"{path}: weights do not fit this encoder ({str(exc).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise DataError(f"{path}: weights do not fit this encoder (missing {missing[:5]}, unexpected {unexpected[:5]})")


def input_record(corpus) -> dict:
    """How the training images were made, stored beside exported weights.

    An encoder only transfers when new images are prepared the same way (size, window,
    percentile clipping, bit depth, and the fixed pixel scaling of
    ``radpair.data.tensors``), so the export carries the corpus's ``normalisation`` spec.
    """
    from radpair.data.tensors import PIXEL_MEAN, PIXEL_STD

    return {
        "image_size": list(corpus.image_size),
        "normalisation": corpus.meta.get("normalisation"),
        "pixel_mean": PIXEL_MEAN,
        "pixel_std": PIXEL_STD,
        "source": corpus.meta.get("source"),
    }


def input_mismatches(meta: dict, corpus) -> list[str]:
    """Ways in which ``corpus`` was prepared differently from an encoder's training images."""
    trained = meta.get("input")
    if not trained:
        return []
    now = input_record(corpus)
    out = []
    if trained.get("image_size") != now["image_size"]:
        out.append(f"image size {now['image_size']} (encoder trained on {trained.get('image_size')})")
    if trained.get("normalisation") != now["normalisation"]:
        out.append(f"normalisation {now['normalisation']} (encoder trained on {trained.get('normalisation')})")
    for key in ("pixel_mean", "pixel_std"):
        if trained.get(key) != now[key]:
            out.append(f"{key} {now[key]} (encoder trained with {trained.get(key)})")
    return out


def load_image_encoder(path: str | Path):
    """Rebuild an exported image encoder from its safetensors file alone.

    The file's metadata holds the run config, so the architecture need not be given.
    """
    from radpair.config import from_dict
    from radpair.models.config import ImageEncoderConfig
    from radpair.models.image_encoders import IMAGE_ENCODERS

    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file {str(path)!r} does not exist")
    meta = read_safetensors_metadata(path)
    try:
        cfg = from_dict(ImageEncoderConfig, meta["config"]["image_encoder"])
    except KeyError:
        raise DataError(f"{path}: no radpair config in its metadata; build the encoder and use load_encoder_weights") from None
    encoder = IMAGE_ENCODERS.build(cfg.name)
    load_encoder_weights(encoder, path)
    return encoder
