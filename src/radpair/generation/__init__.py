"""Report generation: model-agnostic decoding for the captioning models (RadTex, TieNet)."""

from radpair.generation.decoding import (
    DecodeOutput,
    DecodingConfig,
    Step,
    beam_search,
    decode,
    greedy_search,
    nucleus_sampling,
    reorder_state,
)

__all__ = [
    "DecodeOutput",
    "DecodingConfig",
    "Step",
    "beam_search",
    "decode",
    "greedy_search",
    "nucleus_sampling",
    "reorder_state",
]
