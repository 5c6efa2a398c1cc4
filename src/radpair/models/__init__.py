"""Models: image encoders, text encoders, heads, and the pretraining methods built on them.

Every pretraining method is an ``nn.Module`` whose ``forward(batch)`` returns a dict with
``loss`` and ``loss_components`` so a single training loop serves them all.
"""

from radpair.models.config import ImageEncoderConfig, MethodConfig, TextEncoderConfig
from radpair.models.image_encoders import IMAGE_ENCODERS, ImageEncoder, build_image_encoder
from radpair.models.methods import METHODS, build_method
from radpair.models.text_encoders import TEXT_ENCODERS, TextEncoder, build_text_encoder

__all__ = [
    "IMAGE_ENCODERS",
    "METHODS",
    "TEXT_ENCODERS",
    "ImageEncoder",
    "ImageEncoderConfig",
    "MethodConfig",
    "TextEncoder",
    "TextEncoderConfig",
    "build_image_encoder",
    "build_method",
    "build_text_encoder",
]
