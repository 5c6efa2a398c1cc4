"""Pretraining methods: each a module with ``forward(batch) -> {"loss", "loss_components"}``.

A batch is a dict of tensors: ``images`` (B,1,H,W) float, and as the method needs them
``input_ids`` / ``attention_mask`` (B,T) and ``labels`` / ``label_mask`` (B,C). The loop
never looks inside; it only sums nothing and backpropagates ``loss``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from radpair.errors import ConfigError
from radpair.models.config import ImageEncoderConfig, MethodConfig, TextEncoderConfig
from radpair.models.heads import projection_head
from radpair.models.image_encoders import build_image_encoder
from radpair.models.text_encoders import build_text_encoder
from radpair.objectives.contrastive import bidirectional_info_nce
from radpair.registry import Registry

METHODS: Registry[nn.Module] = Registry("method")


class ConVIRT(nn.Module):
    """Zhang et al.: image and report encoders, projection heads, bidirectional InfoNCE."""

    needs_text = True

    def __init__(self, cfg: MethodConfig, image_encoder: nn.Module, text_encoder: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = projection_head(image_encoder.out_dim, cfg.projection_dim)
        self.text_projection = projection_head(text_encoder.out_dim, cfg.projection_dim)
        log_t = torch.tensor(math.log(cfg.temperature))
        if cfg.learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t, persistent=False)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_projection(self.image_encoder(images))

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_projection(self.text_encoder(input_ids, attention_mask))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        img = self.embed_images(batch["images"])
        txt = self.embed_texts(batch["input_ids"], batch["attention_mask"])
        out = bidirectional_info_nce(img, txt, self.log_temperature.exp(), self.cfg.lambda_image_to_text)
        return {
            "loss": out.loss,
            "loss_components": {"image_to_text": out.image_to_text.detach(), "text_to_image": out.text_to_image.detach()},
            "image_embeddings": img.detach(),
            "text_embeddings": txt.detach(),
        }


class Supervised(nn.Module):
    """The from-scratch baseline: image encoder + linear head, masked multi-label BCE."""

    needs_text = False

    def __init__(self, cfg: MethodConfig, image_encoder: nn.Module) -> None:
        super().__init__()
        if not cfg.labels:
            raise ConfigError("method.labels must list the label columns for method 'supervised'")
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.classifier = nn.Linear(image_encoder.out_dim, len(cfg.labels))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.image_encoder(images))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        logits = self.logits(batch["images"])
        mask = batch["label_mask"].to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float(), reduction="none")
        loss = (bce * mask).sum() / mask.sum().clamp_min(1.0)
        return {"loss": loss, "loss_components": {"bce": loss.detach()}, "logits": logits.detach()}


@METHODS.register("convirt")
def _convirt(cfg: MethodConfig, image_cfg: ImageEncoderConfig, text_cfg: TextEncoderConfig, tokenizer=None):
    if tokenizer is None:
        raise ConfigError("method 'convirt' needs a tokenizer (text_encoder.tokenizer)")
    text = build_text_encoder(text_cfg, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id or 0)
    return ConVIRT(cfg, build_image_encoder(image_cfg), text)


@METHODS.register("supervised")
def _supervised(cfg: MethodConfig, image_cfg: ImageEncoderConfig, text_cfg: TextEncoderConfig, tokenizer=None):
    return Supervised(cfg, build_image_encoder(image_cfg))


def build_method(
    cfg: MethodConfig, image_cfg: ImageEncoderConfig, text_cfg: TextEncoderConfig, tokenizer=None
) -> nn.Module:
    return METHODS.build(cfg.name, cfg, image_cfg, text_cfg, tokenizer)
