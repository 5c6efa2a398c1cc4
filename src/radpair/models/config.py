"""Typed configuration of the model components (the library half of a run's config)."""

from __future__ import annotations

from dataclasses import dataclass

from radpair.errors import ConfigError


@dataclass
class ImageEncoderConfig:
    """Which image encoder, and optionally weights to start from.

    ``name`` picks a preset from ``IMAGE_ENCODERS`` (``resnet_tiny`` for CPU tests up to
    ``resnet50``). ``weights`` is a ``.safetensors`` file written by ``radpair`` (an exported
    encoder) loaded strictly.
    """

    name: str = "resnet18"
    weights: str | None = None


@dataclass
class TextEncoderConfig:
    """A BERT built from this config, or a pretrained one from a local directory.

    With ``pretrained`` set (a folder holding ``config.json`` and weights, e.g. a local copy
    of CXR-BERT or BiomedBERT), the size fields are ignored and the folder's tokenizer is
    used unless ``tokenizer`` names another one. Nothing is ever downloaded.
    """

    name: str = "bert"
    tokenizer: str = ""
    pretrained: str | None = None
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_length: int = 128
    dropout: float = 0.1
    pooling: str = "mean"  # cls | mean | max
    freeze: bool = False

    def validate(self) -> None:
        if self.pooling not in ("cls", "mean", "max"):
            raise ConfigError(f"text_encoder.pooling must be cls, mean or max, got {self.pooling!r}")
        if self.hidden_size % self.num_heads:
            raise ConfigError("text_encoder.hidden_size must be divisible by text_encoder.num_heads")
