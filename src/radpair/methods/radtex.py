"""RadTex (Quigley et al.): VirTex's bidirectional captioning as radiograph pretraining.

A visual backbone (the shared image encoder, ResNet-50 with a one-channel stem in the
paper) and a linear projection of its last feature map give a grid of image tokens; a
transformer textual head (:mod:`radpair.models.textual_heads`) writes the FINDINGS
section while attending to them, once left to right and once right to left, and the two
next-token cross-entropies are summed. Only the backbone is transferred; the head is kept
for report generation (``radpair generate``).

Paper → config:

* FINDINGS only, at most 170 tokens (the 95th percentile): ``text_sections: findings``,
  ``max_length: 170``. Reports without FINDINGS follow ``data.empty_text``.
* Vocabulary: the paper used SciBERT's; here the run's tokenizer (``text_encoder.tokenizer``:
  a local folder, e.g. a SciBERT vocabulary, or one trained on the corpus).
* Decoder size: the paper mirrors VirTex without giving sizes, so the defaults are VirTex's
  best textual head (1 layer, width 2048, 32 heads, feed-forward 8192, post-norm, dropout
  0.1); the CPU preset (``configs/radtex_captioning_cpu.yaml``) is much smaller.
* ``[CLS]`` of the run's tokenizer is read as BOS and ``[SEP]`` as EOS; the backward
  direction reads each report's tokens reversed (EOS first), padding untouched
  (:func:`radpair.objectives.captioning.reverse_tokens`).
* Optimisation (SGD + LookAhead, warm-up then cosine, 50 epochs) is the run's ``optim``
  section: ``configs/recipes/radtex.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from radpair.errors import ConfigError, unknown_choice_message
from radpair.methods.base import (BuildContext, Method, MethodConfig, MethodNeeds, TextField, register_method,
                                  special_token_ids, text_keys)
from radpair.models.image_encoders import build_image_encoder
from radpair.models.textual_heads import TransformerTextualHead
from radpair.objectives.captioning import next_token_loss, reverse_tokens, teacher_forced

DIRECTION_CHOICES = ("bidirectional", "forward")


@dataclass
class RadTexConfig(MethodConfig):
    """The textual head's size (VirTex's best: L1, H2048, A32, F8192), the captioning
    direction, and the text it writes (FINDINGS, 170 tokens)."""

    name: str = "radtex_captioning"
    hidden_size: int = 2048
    num_layers: int = 1
    num_heads: int = 32
    feedforward_size: int = 8192
    dropout: float = 0.1
    norm_first: bool = False
    """False: post-norm decoder layers, as VirTex's ``transdec_postnorm``."""
    direction: str = "bidirectional"
    text_sections: str = "findings"
    max_length: int = 170
    """Tokens of the text written, [CLS] and [SEP] included; also the decoder's positions."""
    label_smoothing: float = 0.0

    def validate(self) -> None:
        if self.direction not in DIRECTION_CHOICES:
            raise ConfigError(unknown_choice_message("method.direction", self.direction, DIRECTION_CHOICES))
        if min(self.hidden_size, self.num_layers, self.num_heads, self.feedforward_size) < 1:
            raise ConfigError("method.hidden_size, num_layers, num_heads and feedforward_size must be >= 1")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"method.hidden_size ({self.hidden_size}) must be a multiple of method.num_heads "
                              f"({self.num_heads})")
        if self.max_length < 3:
            raise ConfigError("method.max_length must be >= 3 (BOS, one token, EOS)")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("method.dropout and method.label_smoothing must lie in [0, 1)")


class VisualProjection(nn.Module):
    """The last feature map [B, C, h, w] as h·w image tokens of the decoder's width."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, hidden)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.linear(feature_map.flatten(2).transpose(1, 2))


@register_method("radtex_captioning")
class RadTex(Method):
    """Image encoder + visual projection + bidirectional transformer textual head."""

    config_class = RadTexConfig

    @classmethod
    def needs(cls, cfg: RadTexConfig) -> MethodNeeds:
        return MethodNeeds(text_fields=(TextField("report", sections=cfg.text_sections, max_length=cfg.max_length),),
                          text_encoder=False)

    @classmethod
    def build(cls, cfg: RadTexConfig, parts: BuildContext) -> "RadTex":
        cfg.validate()
        if parts.tokenizer is None:
            raise ConfigError(f"method {cfg.name!r} needs a tokenizer (text_encoder.tokenizer)")
        pad, bos, eos = special_token_ids(parts.tokenizer, cfg.name)
        head = TransformerTextualHead(len(parts.tokenizer), cfg.hidden_size, cfg.num_layers, cfg.num_heads,
                                      cfg.feedforward_size, cfg.dropout, cfg.max_length, pad,
                                      bidirectional=cfg.direction == "bidirectional", norm_first=cfg.norm_first)
        return cls(cfg, build_image_encoder(parts.image_encoder), head, pad, bos, eos)

    def __init__(self, cfg: RadTexConfig, image_encoder: nn.Module, textual: TransformerTextualHead,
                 pad_id: int, bos_id: int, eos_id: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.visual_projection = VisualProjection(image_encoder.out_dim, cfg.hidden_size)
        self.textual = textual
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.image_encoder.feature_map(images))

    def caption_losses(self, memory: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Next-token loss of each direction the head has."""
        out = {}
        for direction in self.textual.directions:
            seq = ids if direction == "forward" else reverse_tokens(ids, mask)
            tf = teacher_forced(seq, mask)
            logits = self.textual.logits(memory, tf.inputs, tf.input_mask, direction)
            out[direction] = next_token_loss(logits, tf.targets, label_smoothing=self.cfg.label_smoothing)
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        ids_key, mask_key = text_keys("report")
        memory = self.image_tokens(batch["images"])
        losses = self.caption_losses(memory, batch[ids_key], batch[mask_key])
        return {"loss": sum(losses.values()), "loss_components": {k: v.detach() for k, v in losses.items()}}

    # -- generation: the step interface of radpair.generation.decoding ---------------------------
    def start_decoding(self, images: torch.Tensor) -> dict[str, Any]:
        """The decoding state of ``images``: their projected image tokens [N, S, H] and an
        empty per-layer cache of the forward decoder."""
        memory = self.image_tokens(images)
        return {"memory": memory, "cache": self.textual.empty_cache(memory.shape[0], memory.device, memory.dtype)}

    def decode_step(self, prefix: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Next-token logits of the forward decoder after ``prefix``, feeding only its last
        token through the cache (``prefix`` must extend the cached one by exactly one)."""
        cache = state["cache"]
        if cache and cache[0].shape[1] != prefix.shape[1] - 1:
            raise ValueError(f"decode_step got a prefix of {prefix.shape[1]} tokens for a cache of "
                             f"{cache[0].shape[1]}: feed every token once, in order")
        logits, cache = self.textual.step_logits(state["memory"], prefix[:, -1], cache, "forward")
        return logits, {"memory": state["memory"], "cache": cache}

    @property
    def max_new_tokens(self) -> int:
        return self.cfg.max_length - 1

    def exports(self) -> dict[str, nn.Module]:
        return {"image_encoder": self.image_encoder,
                "textual_head": nn.ModuleDict({"visual_projection": self.visual_projection,
                                               "textual": self.textual})}
