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
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
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
