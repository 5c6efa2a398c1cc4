"""Text encoders: a Hugging Face BERT built from a config, or loaded from a local folder.

The same class serves a tiny random-init BERT (tests, demo) and a pretrained clinical
BERT (CXR-BERT, BiomedBERT, SciBERT) saved on disk; loading is ``local_files_only`` so
nothing is downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from radpair.errors import ConfigError
from radpair.models.config import TextEncoderConfig
from radpair.registry import Registry

TEXT_ENCODERS: Registry["TextEncoder"] = Registry("text encoder")


class TextEncoder(nn.Module):
    """BERT plus a pooling rule, returning one vector per report and token states."""

    def __init__(self, bert: nn.Module, pooling: str) -> None:
        super().__init__()
        self.bert = bert
        self.pooling = pooling
        self.out_dim = int(bert.config.hidden_size)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def pool(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return states[:, 0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        if self.pooling == "mean":
            return (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return states.masked_fill(mask == 0, torch.finfo(states.dtype).min).amax(1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.token_states(input_ids, attention_mask), attention_mask)


@TEXT_ENCODERS.register("bert")
def bert(cfg: TextEncoderConfig, vocab_size: int, pad_token_id: int = 0) -> TextEncoder:
    from transformers import AutoModel, BertConfig, BertModel

    if cfg.pretrained:
        path = Path(cfg.pretrained)
        if not (path / "config.json").is_file():
            raise ConfigError(f"text_encoder.pretrained {str(path)!r} has no config.json (expected a saved model folder)")
        model = AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    else:
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=max(cfg.max_length, 32),
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            pad_token_id=pad_token_id,
        )
        model = BertModel(config, add_pooling_layer=False)
    encoder = TextEncoder(model, cfg.pooling)
    if cfg.freeze:
        for p in encoder.parameters():
            p.requires_grad_(False)
    return encoder


def build_text_encoder(cfg: TextEncoderConfig, vocab_size: int, pad_token_id: int = 0) -> TextEncoder:
    return TEXT_ENCODERS.build(cfg.name, cfg, vocab_size, pad_token_id)
