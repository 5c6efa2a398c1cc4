"""ConVIRT (Zhang et al.): image and report encoders, projection heads, bidirectional InfoNCE.

Also the three single-text models of the report-section study (Han, Perkins and Shah):
ConVIRT on FINDINGS, on IMPRESSION and on both is this method with ``text_sections``
``findings``, ``impression`` or ``findings+impression`` and ``require_sections:
[findings, impression]``, so all four models of that study train on the same reports.

``false_negatives`` masks or softens in-batch negatives that share a study, a patient, a
normalised report text or a label vector (:mod:`radpair.objectives.false_negatives`). Off
by default: the default computes exactly the loss of the paper, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from radpair.errors import ConfigError, unknown_choice_message
from radpair.methods.base import (
    BuildContext,
    LabelNeed,
    Method,
    MethodConfig,
    MethodNeeds,
    TextField,
    build_text_tower,
    register_method,
    text_keys,
)
from radpair.models.heads import projection_head
from radpair.models.image_encoders import build_image_encoder
from radpair.objectives.contrastive import bidirectional_info_nce
from radpair.objectives.false_negatives import CODE_KINDS, MODES, RowCodes, false_negative_mask, masked_info_nce


@dataclass
class ConVIRTConfig(MethodConfig):
    """ConVIRT's settings: τ 0.1 and the image-to-text direction weighted 0.75 in the paper.

    ``text_sections`` (``None``: the run's ``data.text_sections``) picks the report part the
    text encoder reads; ``require_sections`` drops reports lacking any of those sections.
    ``false_negatives`` lists code kinds (study, patient, report, labels) whose shared
    values exclude (``false_negative_mode: mask``) or soften (``soften``, weight
    ``false_negative_weight``) a negative; ``labels`` compares the binary label vector of
    ``false_negative_labels`` (columns of ``data.label_source``).
    """

    name: str = "convirt"
    temperature: float = 0.1
    learn_temperature: bool = False
    lambda_image_to_text: float = 0.75
    projection_dim: int = 128
    projection_hidden: int | None = None
    """Hidden width of both projection heads; ``None``: the encoder's output width."""
    text_sections: str | None = None
    require_sections: list[str] = field(default_factory=list)
    false_negatives: list[str] = field(default_factory=list)
    false_negative_mode: str = "mask"
    false_negative_weight: float = 0.5
    false_negative_labels: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError("method.temperature must be positive")
        if not 0.0 <= self.lambda_image_to_text <= 1.0:
            raise ConfigError("method.lambda_image_to_text must lie in [0, 1]")
        check_false_negative_options(self)


def check_false_negative_options(cfg) -> None:
    """The false-negative keys shared by the contrastive methods (``false_negatives``,
    ``false_negative_mode``, ``false_negative_weight``, ``false_negative_labels``)."""
    for kind in cfg.false_negatives:
        if kind not in CODE_KINDS:
            raise ConfigError(unknown_choice_message("method.false_negatives entry", kind, CODE_KINDS))
    if cfg.false_negative_mode not in MODES:
        raise ConfigError(unknown_choice_message("method.false_negative_mode", cfg.false_negative_mode, MODES))
    if not 0.0 <= cfg.false_negative_weight <= 1.0:
        raise ConfigError("method.false_negative_weight must lie in [0, 1]")
    if "labels" in cfg.false_negatives and not cfg.false_negative_labels:
        raise ConfigError("method.false_negatives includes 'labels': list the columns in method.false_negative_labels")


def false_negative_needs(kinds: list[str], label_columns: list[str]) -> dict:
    """The row codes and labels a false-negative option needs (shared by the joint methods)."""
    out: dict = {}
    if any(k in ("study", "patient", "report") for k in kinds):
        out["row_codes"] = True
    if "labels" in kinds:
        out["labels"] = LabelNeed(columns=tuple(label_columns), required=False)
    return out


def batch_codes(batch: dict[str, torch.Tensor], kinds: list[str]) -> RowCodes:
    """The :class:`RowCodes` of a batch for the false-negative kinds in use."""
    labels = None
    if "labels" in kinds:
        mask = batch["label_mask"].bool()
        labels = torch.where(mask, batch["labels"].float(), torch.full_like(batch["labels"].float(), float("nan")))
    return RowCodes(
        study=batch.get("study_code") if "study" in kinds else None,
        patient=batch.get("patient_code") if "patient" in kinds else None,
        report=batch.get("report_code") if "report" in kinds else None,
        labels=labels,
    )


@register_method("convirt")
class ConVIRT(Method):
    """Zhang et al.: image and report encoders, projection heads, bidirectional InfoNCE."""

    config_class = ConVIRTConfig

    @classmethod
    def needs(cls, cfg: ConVIRTConfig) -> MethodNeeds:
        return MethodNeeds(
            text_fields=(TextField("report", sections=cfg.text_sections),),
            require_sections=tuple(cfg.require_sections),
            **false_negative_needs(cfg.false_negatives, cfg.false_negative_labels),
        )

    @classmethod
    def build(cls, cfg: ConVIRTConfig, parts: BuildContext) -> "ConVIRT":
        text = build_text_tower(parts, cfg.name)  # first: the order of initialisation draws is part of the seed
        return cls(cfg, build_image_encoder(parts.image_encoder), text)

    def __init__(self, cfg: ConVIRTConfig, image_encoder: torch.nn.Module, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = projection_head(image_encoder.out_dim, cfg.projection_dim, cfg.projection_hidden)
        self.text_projection = projection_head(text_encoder.out_dim, cfg.projection_dim, cfg.projection_hidden)
        log_t = torch.tensor(math.log(cfg.temperature))
        if cfg.learn_temperature:
            self.log_temperature = torch.nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t, persistent=False)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_projection(self.image_encoder(images))

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_projection(self.text_encoder(input_ids, attention_mask))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        ids, mask = text_keys("report")
        img = self.embed_images(batch["images"])
        txt = self.embed_texts(batch[ids], batch[mask])
        tau = self.log_temperature.exp()
        if self.cfg.false_negatives:
            fn = false_negative_mask(batch_codes(batch, self.cfg.false_negatives), self.cfg.false_negatives)
            out = masked_info_nce(img, txt, tau, self.cfg.lambda_image_to_text, fn,
                                  self.cfg.false_negative_mode, self.cfg.false_negative_weight)
        else:
            out = bidirectional_info_nce(img, txt, tau, self.cfg.lambda_image_to_text)
        return {
            "loss": out.loss,
            "loss_components": {"image_to_text": out.image_to_text.detach(), "text_to_image": out.text_to_image.detach()},
            "image_embeddings": img.detach(),
            "text_embeddings": txt.detach(),
        }
