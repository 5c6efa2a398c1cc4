"""The from-scratch baseline: image encoder + linear head, masked multi-label BCE on labels only."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from radpair.errors import ConfigError
from radpair.methods.base import BuildContext, LabelNeed, Method, MethodConfig, MethodNeeds, register_method
from radpair.models.image_encoders import build_image_encoder


@dataclass
class SupervisedConfig(MethodConfig):
    """``labels``: the binary label columns (of ``data.label_source``) the network learns."""

    name: str = "supervised"
    labels: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.labels:
            raise ConfigError("method.labels must list the label columns for method 'supervised'")


@register_method("supervised")
class Supervised(Method):
    """Image encoder + linear head; reads no text."""

    config_class = SupervisedConfig
    learns_from_reports = False

    @classmethod
    def needs(cls, cfg: SupervisedConfig) -> MethodNeeds:
        return MethodNeeds(labels=LabelNeed(columns=tuple(cfg.labels)))

    @classmethod
    def build(cls, cfg: SupervisedConfig, parts: BuildContext) -> "Supervised":
        return cls(cfg, build_image_encoder(parts.image_encoder))

    def __init__(self, cfg: SupervisedConfig, image_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.classifier = torch.nn.Linear(image_encoder.out_dim, len(cfg.labels))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.image_encoder(images))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        logits = self.logits(batch["images"])
        mask = batch["label_mask"].to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float(), reduction="none")
        loss = (bce * mask).sum() / mask.sum().clamp_min(1.0)
        return {"loss": loss, "loss_components": {"bce": loss.detach()}, "logits": logits.detach()}

    def exports(self) -> dict[str, torch.nn.Module]:
        return {"image_encoder": self.image_encoder, "classifier": self.classifier}
