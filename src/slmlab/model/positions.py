"""Extension point "positions": how a model knows where a token is.

A position scheme does up to two things: `embed(positions)` returns a (T, d_model) tensor added
to the token embeddings (or None), and `rotate(q, k, positions)` transforms queries and keys
inside attention (identity here). `max_positions` is the longest sequence it can place (None if
unbounded). `positions` is a (T,) tensor of absolute indices, which
continue from the KV cache length during generation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig


class LearnedPositions(nn.Module):
    """GPT-2 style learned absolute embeddings: x_t = wte[token_t] + wpe[t], t < block_size."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.max_positions = cfg.block_size
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)

    def embed(self, positions: torch.Tensor) -> torch.Tensor:
        return self.wpe(positions)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        return q, k


POSITIONS: dict[str, type[nn.Module]] = {"learned": LearnedPositions}


def build_positions(cfg: ModelConfig) -> nn.Module:
    return POSITIONS[cfg.pos](cfg)
