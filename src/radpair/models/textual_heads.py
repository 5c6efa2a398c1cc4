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

    def step_logits(self, memory: torch.Tensor, token: torch.Tensor, cache: tuple[torch.Tensor, ...],
                    direction: str = "forward") -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Next-token logits [N, V] after one more token ([N] ids), reusing ``cache``: per
        layer, that layer's inputs at the earlier positions ([N, t, hidden]; empty at the
        start, see :meth:`empty_cache`). Exact in eval mode: under the causal mask an earlier
        position never changes when later tokens arrive, so only the new position is
        computed, and decoding costs O(L) layer passes per report instead of O(L²)."""
        layers = self.forward_layers if direction == "forward" else self.backward_layers
        position = cache[0].shape[1] if cache else 0
        if position >= self.embedding.positions.num_embeddings:
            raise ValueError(f"token {position + 1} exceeds the decoder's {self.embedding.positions.num_embeddings} "
                             "positions")
        pos = torch.full((token.shape[0], 1), position, dtype=torch.long, device=token.device)
        emb = self.embedding
        x = emb.dropout(emb.norm(emb.words(token.unsqueeze(1)) + emb.positions(pos)))
        new_cache = []
        for layer, past in zip(layers.layers, cache):
            seen = torch.cat([past, x], dim=1)
            new_cache.append(seen)
            x = _layer_at_last_position(layer, x, seen, memory)
        if layers.norm is not None:
            x = layers.norm(x)
        return self.output(x[:, 0]), tuple(new_cache)

    def empty_cache(self, batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple:
        """The decoding cache before the first token: one [N, 0, hidden] tensor per layer."""
        n_layers = len(self.forward_layers.layers)
        return tuple(torch.zeros(batch, 0, self.hidden, device=device, dtype=dtype) for _ in range(n_layers))


def _layer_at_last_position(layer: nn.TransformerDecoderLayer, x: torch.Tensor, seen: torch.Tensor,
                            memory: torch.Tensor) -> torch.Tensor:
    """One decoder layer for the newest position only: ``x`` [N, 1, H] its input, ``seen``
    [N, t+1, H] the layer's inputs at every position so far (keys and values of the causal
    self-attention). The same arithmetic as :class:`nn.TransformerDecoderLayer` for that row."""
    if layer.norm_first:
        kv = layer.norm1(seen)
        x = x + layer.dropout1(layer.self_attn(layer.norm1(x), kv, kv, need_weights=False)[0])
        x = x + layer.dropout2(layer.multihead_attn(layer.norm2(x), memory, memory, need_weights=False)[0])
        return x + layer._ff_block(layer.norm3(x))
    x = layer.norm1(x + layer.dropout1(layer.self_attn(x, seen, seen, need_weights=False)[0]))
    x = layer.norm2(x + layer.dropout2(layer.multihead_attn(x, memory, memory, need_weights=False)[0]))
    return layer.norm3(x + layer._ff_block(x))
