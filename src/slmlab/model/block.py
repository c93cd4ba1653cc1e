"""One pre-norm transformer block: x + Attn(LN(x) + shift), then + MLP(LN(x) + shift).

`shift` (broadcastable to x, or None) is the decoder's conditioning of the sublayer inputs."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .attention import CausalSelfAttention, KVCache
from .hooks import HookPoint
from .layers import build_mlp, build_norm


class Block(nn.Module):
    """(B, T, d_model) -> (B, T, d_model). Hook points (TransformerLens's names), each (B, T, d_model):
    hook_resid_pre (the input), hook_attn_out, hook_resid_mid (after attention), hook_mlp_out,
    hook_resid_post (the output)."""

    def __init__(self, cfg: ModelConfig, layer: int, positions: nn.Module, **attention_extensions):
        super().__init__()
        self.ln1 = build_norm(cfg)
        self.attn = CausalSelfAttention(cfg, layer, positions, **attention_extensions)
        self.ln2 = build_norm(cfg)
        self.mlp = build_mlp(cfg)
        self.hook_resid_pre, self.hook_attn_out, self.hook_mlp_out = HookPoint(), HookPoint(), HookPoint()
        self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        h = self.ln1(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(h if shift is None else h + shift, positions, cache)))
        h = self.ln2(x)
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(h if shift is None else h + shift)))
