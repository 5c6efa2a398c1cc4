"""TIMNet: text-image matching as pretraining.

Two branches map a radiograph and its FINDINGS to 512-d vectors; a shallow classifier
reads |v_t − v_i| and says whether they belong to the same imaging event
(:func:`radpair.objectives.matching.match_features`). Being able to tell matching from
non-matching pairs forces the image branch to see what the report describes.

* **Text branch:** BERT token states → 1×1 conv → BN → ReLU → global average pool over
  the (unpadded) tokens → FC 512. FINDINGS only, cut to 256 tokens (the paper: padded
  or cut to 256 words; the CPU preset is shorter).
* **Image branch:** the image encoder's conv layers (ResNet-18 in the paper) → 1×1 conv
  → BN → ReLU → GAP → FC 512.
* **Pairs:** every training row gives its true pair and one false pair: its image with
  the FINDINGS of a partner row, drawn per epoch as a permutation of the training rows in
  which no row is paired with a report of identical normalised text (reports repeat, and a
  "false" pair with the same text would be a true match). The partner's text is served by
  the loop as extra rows (``false_*``), a pure function of (seed, epoch), so resume is
  exact and 1 and N processes see the same pairs. True and false pairs are balanced.
* **Loss:** cross-entropy of the match classifier (2 outputs, class 1 = match); the paper
  trains with Adam at 1e-4 for 50 epochs at 500 px.

The exported ``image_encoder`` is what downstream transfer uses; the paper's downstream
head (1×1 conv, FC 512, output) is the ``timnet`` head of ``radpair transfer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radpair.errors import ConfigError
from radpair.methods.base import (BuildContext, ExtraRows, Method, MethodConfig, MethodNeeds, TextField,
                                  build_text_tower, register_method, text_keys)
from radpair.models.image_encoders import build_image_encoder
from radpair.objectives.matching import match_features
from radpair.objectives.ranking import constrained_permutation

_FALSE_PAIR_STREAM = 0x71AE8


@dataclass
class TIMNetConfig(MethodConfig):
    """``embedding_dim`` 512 and 256 words of text in the paper; ``conv_channels`` is
    the width of the 1×1 convolutions and ``classifier_hidden`` the hidden layer of the
    shallow match classifier (neither is stated in the paper)."""

    name: str = "timnet_matching"
    embedding_dim: int = 512
    conv_channels: int = 512
    classifier_hidden: int = 256
    text_sections: str = "findings"
    text_max_length: int | None = None
    """Tokens of FINDINGS read (the paper: 256 words); ``None`` takes ``text_encoder.max_length``."""

    def validate(self) -> None:
        if min(self.embedding_dim, self.conv_channels, self.classifier_hidden) < 1:
            raise ConfigError("method.embedding_dim, conv_channels and classifier_hidden must be >= 1")


def draw_false_partners(seed: int, epoch: int, rows: np.ndarray, dataset) -> np.ndarray:
    """For each row, the position (within ``rows``) of a partner whose report text differs."""
    codes = dataset.codes["report_code"][rows]
    rng = np.random.default_rng([int(seed), int(epoch), _FALSE_PAIR_STREAM])
    try:
        return constrained_permutation(rng, codes)
    except ValueError as exc:
        raise ConfigError(f"TIMNet false pairs: {exc} (over half of the reports are one text)") from None


class _ConvBranch(nn.Module):
    """1×1 conv → BN → ReLU → global average pool → FC, on a feature map [B, C, H, W]."""

    def __init__(self, in_channels: int, channels: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(2).mean(-1))


class _TokenBranch(nn.Module):
    """The text twin of :class:`_ConvBranch` over token states [B, T, H].

    A 1×1 convolution over the token axis is a linear map per token; it and BatchNorm see
    the real tokens only (padding would enter the BatchNorm statistics, and how much
    padding a batch has depends on how it is split across processes). Pooling averages
    over the real tokens.
    """

    def __init__(self, in_channels: int, channels: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Linear(in_channels, channels, bias=False)
        self.bn = nn.BatchNorm1d(channels)
        self.fc = nn.Linear(channels, out_dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        real = mask.bool()
        h = F.relu(self.bn(self.conv(states[real])))  # [N_tokens, C]
        rows = torch.arange(states.shape[0], device=states.device).repeat_interleave(real.sum(1))
        pooled = torch.zeros(states.shape[0], h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, rows, h)
        pooled = pooled / real.sum(1, keepdim=True).clamp_min(1).to(h.dtype)
        return self.fc(pooled)


@register_method("timnet_matching")
class TIMNetMatching(Method):
    config_class = TIMNetConfig

    @classmethod
    def needs(cls, cfg: TIMNetConfig) -> MethodNeeds:
        return MethodNeeds(
            text_fields=(TextField("report", sections=cfg.text_sections, max_length=cfg.text_max_length),),
            row_codes=True,
            extra_rows=ExtraRows("false", draw_false_partners, images=False, text=True),
        )

    @classmethod
    def build(cls, cfg: TIMNetConfig, parts: BuildContext) -> "TIMNetMatching":
        text = build_text_tower(parts, cfg.name)  # first: the order of initialisation draws is part of the seed
        return cls(cfg, build_image_encoder(parts.image_encoder), text)

    def __init__(self, cfg: TIMNetConfig, image_encoder: nn.Module, text_encoder: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_branch = _ConvBranch(image_encoder.out_dim, cfg.conv_channels, cfg.embedding_dim)
        self.text_branch = _TokenBranch(text_encoder.out_dim, cfg.conv_channels, cfg.embedding_dim)
        self.match_classifier = nn.Sequential(nn.Linear(cfg.embedding_dim, cfg.classifier_hidden),
                                              nn.ReLU(inplace=True), nn.Linear(cfg.classifier_hidden, 2))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_branch(self.image_encoder.feature_map(images))

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.text_encoder.token_states(input_ids, attention_mask)  # [B, T, H]
        return self.text_branch(states, attention_mask)

    def match_logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """[B, 2] logits of "same imaging event" for row-aligned pairs."""
        return self.match_classifier(match_features(text_emb, image_emb))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        ids, mask = text_keys("report")
        img = self.embed_images(batch["images"])
        n = img.shape[0]
        # one encoder pass over true and false texts, so BatchNorm sees both
        both = self.embed_texts(_cat_pad(batch[ids], batch[f"false_{ids}"]), _cat_pad(batch[mask], batch[f"false_{mask}"]))
        txt, false_txt = both[:n], both[n:]
        logits = self.match_logits(torch.cat([img, img]), both)
        target = torch.cat([torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)]).to(img.device)
        loss = F.cross_entropy(logits.float(), target)
        accuracy = (logits.argmax(-1) == target).float().mean()
        return {"loss": loss, "loss_components": {"match_ce": loss.detach(), "match_accuracy": accuracy.detach()},
                "logits": logits.detach(), "image_embeddings": img.detach(), "text_embeddings": txt.detach()}

    def exports(self) -> dict[str, nn.Module]:
        return {"image_encoder": self.image_encoder, "text_encoder": self.text_encoder,
                "image_branch": self.image_branch, "text_branch": self.text_branch,
                "match_classifier": self.match_classifier}


def _cat_pad(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Stack two right-padded [B, T] id/mask tensors of different widths."""
    width = max(a.shape[1], b.shape[1])
    return torch.cat([F.pad(a, (0, width - a.shape[1])), F.pad(b, (0, width - b.shape[1]))])
