"""Models: image encoders, text encoders and heads, the parts every method is built from.

The pretraining methods themselves live in :mod:`radpair.methods`, one module each.
"""

from radpair.models.config import ImageEncoderConfig, TextEncoderConfig
from radpair.models.image_encoders import IMAGE_ENCODERS, ImageEncoder, build_image_encoder
from radpair.models.text_encoders import TEXT_ENCODERS, TextEncoder, build_text_encoder

__all__ = [
    "IMAGE_ENCODERS",
    "TEXT_ENCODERS",
    "ImageEncoder",
    "ImageEncoderConfig",
    "TextEncoder",
    "TextEncoderConfig",
    "build_image_encoder",
    "build_text_encoder",
]
