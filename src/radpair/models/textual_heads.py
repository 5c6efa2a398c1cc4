"""A VirTex-style textual head: a causal transformer decoder that writes a report while
attending to projected image features.

Built from :class:`torch.nn.TransformerDecoderLayer` (post-norm by default, like VirTex's
``transdec_postnorm``; GELU), with learned token and position embeddings followed by
LayerNorm and dropout. The token embedding and the output layer are one tied matrix and
are shared by the forward and the backward decoder of bidirectional captioning; each
direction has its own decoder layers, so the backward model cannot copy the forward one's
attention pattern and the two tasks stay distinct (VirTex's bicaptioning design).
"""

from __future__ import annotations

import torch
from torch import nn

DIRECTIONS = ("forward", "backward")


class TokenEmbedding(nn.Module):
    """Token + learned position embedding, then LayerNorm and dropout."""

    def __init__(self, vocab_size: int, hidden: int, max_positions: int, pad_id: int, dropout: float) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, hidden, padding_idx=pad_id)
        self.positions = nn.Embedding(max_positions, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-8)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.positions.num_embeddings:
            raise ValueError(f"{ids.shape[1]} tokens exceed the decoder's {self.positions.num_embeddings} positions")
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        return self.dropout(self.norm(self.words(ids) + self.positions(pos)))


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """Bool [T, T], True where attention is *blocked* (a later token)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


class TransformerTextualHead(nn.Module):
    """Causal decoder(s) over image memory. ``logits(memory, ids, mask, direction)`` gives
    [B, T, V] next-token logits for every prefix of ``ids``."""

    def __init__(self, vocab_size: int, hidden: int = 512, layers: int = 1, heads: int = 8,
                 feedforward: int = 2048, dropout: float = 0.1, max_positions: int = 170, pad_id: int = 0,
                 bidirectional: bool = True, norm_first: bool = False) -> None:
        super().__init__()
        self.vocab_size, self.hidden, self.pad_id = vocab_size, hidden, pad_id
        self.embedding = TokenEmbedding(vocab_size, hidden, max_positions, pad_id, dropout)

        def stack() -> nn.TransformerDecoder:
            layer = nn.TransformerDecoderLayer(hidden, heads, feedforward, dropout, activation="gelu",
                                               batch_first=True, norm_first=norm_first)
            return nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(hidden) if norm_first else None)

        self.forward_layers = stack()
        self.backward_layers = stack() if bidirectional else None
        self.output = nn.Linear(hidden, vocab_size)
        self.reset_parameters()
        self.output.weight = self.embedding.words.weight  # tied after init: one matrix

    def reset_parameters(self) -> None:
        """BERT-style N(0, 0.02) for linear and embedding weights, as VirTex does."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(0.0, 0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.data.zero_()
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()

    @property
    def directions(self) -> tuple[str, ...]:
        return ("forward", "backward") if self.backward_layers is not None else ("forward",)

    def logits(self, memory: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None,
               direction: str = "forward") -> torch.Tensor:
        """``memory`` [B, S, hidden] projected image features; ``ids`` [B, T]; ``mask`` [B, T]
        1 on real tokens (None: all real)."""
        if direction not in self.directions:
            raise ValueError(f"direction {direction!r}: this head has {list(self.directions)}")
        layers = self.forward_layers if direction == "forward" else self.backward_layers
        x = self.embedding(ids)
        pad = None if mask is None else ~mask.bool()
        h = layers(x, memory, tgt_mask=causal_mask(ids.shape[1], ids.device),
                                     tgt_key_padding_mask=pad, tgt_is_causal=True)
        return self.output(h)
