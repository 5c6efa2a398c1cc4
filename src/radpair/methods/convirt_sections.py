"""Modified ConVIRT of the report-section study (Han, Perkins and Shah).

FINDINGS and IMPRESSION are encoded separately by the *shared* text encoder and
projection; their mean is the global text embedding that ConVIRT's loss aligns with the
image (L_global), and a local InfoNCE aligns the two sections with each other (L_local):
L = λ·L_local + (1−λ)·L_global, with L_local = α·ℓ(fnd→imp) + (1−α)·ℓ(imp→fnd)
(:func:`radpair.objectives.sections.section_study_loss`). The paper's settings: τ 0.1,
every scalar 0.75, projection hidden 1024 and output 512, AdamW 1e-5, 30 epochs.

Like the paper, reports lacking either section are dropped for all four models of the
study (this one and ConVIRT on FINDINGS, on IMPRESSION and on both, which are
:mod:`radpair.methods.convirt` with ``require_sections: [findings, impression]``); the
loop counts them and lists them in ``dropped_rows.csv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from radpair.errors import ConfigError
from radpair.methods.base import (BuildContext, Method, MethodConfig, MethodNeeds, TextField, build_text_tower,
                                  register_method, text_keys)
from radpair.methods.convirt import batch_codes, check_false_negative_options, false_negative_needs
from radpair.models.heads import projection_head
from radpair.models.image_encoders import build_image_encoder
from radpair.objectives.false_negatives import false_negative_mask, masked_info_nce
from radpair.objectives.sections import section_local_loss, section_study_loss

SECTIONS = ("findings", "impression")


@dataclass
class ConVIRTSectionsConfig(MethodConfig):
    """Modified ConVIRT: ``alpha`` weighs fnd→imp in L_local, ``lambda_local`` weighs L_local
    against L_global, ``lambda_image_to_text`` weighs image→text inside L_global.
    ``false_negatives`` applies to the global (image-text) term as in ConVIRT."""

    name: str = "convirt_sections"
    temperature: float = 0.1
    alpha: float = 0.75
    lambda_local: float = 0.75
    lambda_image_to_text: float = 0.75
    projection_dim: int = 512
    projection_hidden: int = 1024
    false_negatives: list[str] = field(default_factory=list)
    false_negative_mode: str = "mask"
    false_negative_weight: float = 0.5
    false_negative_labels: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError("method.temperature must be positive")
        for key in ("alpha", "lambda_local", "lambda_image_to_text"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"method.{key} must lie in [0, 1], got {getattr(self, key)}")
        check_false_negative_options(self)


@register_method("convirt_sections")
class ConVIRTSections(Method):
    config_class = ConVIRTSectionsConfig

    @classmethod
    def needs(cls, cfg: ConVIRTSectionsConfig) -> MethodNeeds:
        return MethodNeeds(
            text_fields=tuple(TextField(s, sections=s) for s in SECTIONS),
            require_sections=SECTIONS,
            **false_negative_needs(cfg.false_negatives, cfg.false_negative_labels),
        )

    @classmethod
    def build(cls, cfg: ConVIRTSectionsConfig, parts: BuildContext) -> "ConVIRTSections":
        text = build_text_tower(parts, cfg.name)  # first: the order of initialisation draws is part of the seed
        return cls(cfg, build_image_encoder(parts.image_encoder), text)

    def __init__(self, cfg: ConVIRTSectionsConfig, image_encoder: nn.Module, text_encoder: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = projection_head(image_encoder.out_dim, cfg.projection_dim, cfg.projection_hidden)
        self.text_projection = projection_head(text_encoder.out_dim, cfg.projection_dim, cfg.projection_hidden)
        self.register_buffer("log_temperature", torch.tensor(math.log(cfg.temperature)), persistent=False)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_projection(self.image_encoder(images))

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One text (a prompt, a section) through the shared encoder and projection."""
        return self.text_projection(self.text_encoder(input_ids, attention_mask))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        cfg = self.cfg
        img = self.embed_images(batch["images"])
        fnd = self.embed_texts(*(batch[k] for k in text_keys("findings")))
        imp = self.embed_texts(*(batch[k] for k in text_keys("impression")))
        tau = self.log_temperature.exp()
        if cfg.false_negatives:
            text = (fnd.float() + imp.float()) / 2
            fn = false_negative_mask(batch_codes(batch, cfg.false_negatives), cfg.false_negatives)
            global_ = masked_info_nce(img, text, tau, cfg.lambda_image_to_text, fn,
                                      cfg.false_negative_mode, cfg.false_negative_weight)
            local = section_local_loss(fnd, imp, tau, cfg.alpha)
            loss = cfg.lambda_local * local.loss + (1.0 - cfg.lambda_local) * global_.loss
        else:
            out = section_study_loss(img, fnd, imp, tau, cfg.alpha, cfg.lambda_local, cfg.lambda_image_to_text)
            loss, local, global_, text = out.loss, out.local, out.global_, out.text_emb
        return {
            "loss": loss,
            "loss_components": {"local": local.loss.detach(), "global": global_.loss.detach(),
                                "findings_to_impression": local.image_to_text.detach(),
                                "image_to_text": global_.image_to_text.detach()},
            "image_embeddings": img.detach(),
            "text_embeddings": text.detach(),
        }

    def exports(self) -> dict[str, nn.Module]:
        return {"image_encoder": self.image_encoder, "text_encoder": self.text_encoder,
                "image_projection": self.image_projection, "text_projection": self.text_projection}
