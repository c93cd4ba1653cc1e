"""Small building blocks shared by every architecture: norms and the MLPs (registry.MLPS)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..registry import MLPS, NORMS
from .hooks import HookPoint

NORMS.register("layernorm", lambda cfg, dim: nn.LayerNorm(dim, eps=cfg.norm_eps, bias=cfg.bias))
NORMS.register("rmsnorm", lambda cfg, dim: nn.RMSNorm(dim, eps=cfg.norm_eps))


def build_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    """The norm `model.norm` names over the last dimension (registry.NORMS: LayerNorm, with bias
    when `cfg.bias`, or RMSNorm)."""
    return NORMS[cfg.norm](cfg, dim or cfg.d_model)


def build_dropout(p: float) -> nn.Module:
    """nn.Dropout(p), or nn.Identity() for p = 0, where dropout is the identity in training too:
    one call less per use, which decoding at batch 1 (all call overhead) measured at ~5%."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def build_mlp(cfg: ModelConfig) -> nn.Module:
    """The MLP `model.mlp` names (registry.MLPS)."""
    return MLPS[cfg.mlp](cfg)


class MLP(nn.Module):
    """x -> proj(GELU(fc(x))), (B, T, d_model) -> (B, T, d_model), hidden width cfg.ff_dim (GPT-2's).
    Hook points (B, T, ff_dim): hook_pre = fc(x), hook_post = GELU(hook_pre), the neurons."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)
        self.proj.residual_projection = True
        self.dropout = build_dropout(cfg.dropout)
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x):
        return self.dropout(self.proj(self.hook_post(self.act(self.hook_pre(self.fc(x))))))


def swiglu_hidden(cfg: ModelConfig) -> int:
    """2/3 of d_ff rounded to a multiple of 8: three d x h matrices hold as many weights as the
    GELU MLP's two d x d_ff ones (LLaMA's rule)."""
    return max(8, round(2 * cfg.ff_dim / 3 / 8) * 8)


class SwiGLU(nn.Module):
    """x -> down(SiLU(gate(x)) ⊙ up(x)), (B, T, d_model) -> (B, T, d_model), hidden swiglu_hidden(cfg).
    Hook points (B, T, hidden), as TransformerLens's gated MLP: hook_pre = gate(x), hook_pre_linear
    = up(x), hook_post = SiLU(hook_pre) ⊙ hook_pre_linear, the neurons."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = swiglu_hidden(cfg)
        self.gate = nn.Linear(cfg.d_model, hidden, bias=cfg.bias)
        self.up = nn.Linear(cfg.d_model, hidden, bias=cfg.bias)
        self.down = nn.Linear(hidden, cfg.d_model, bias=cfg.bias)
        self.down.residual_projection = True
        self.dropout = build_dropout(cfg.dropout)
        self.hook_pre, self.hook_pre_linear, self.hook_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x):
        return self.dropout(self.down(self.hook_post(F.silu(self.hook_pre(self.gate(x))) * self.hook_pre_linear(self.up(x)))))


MLPS.register("gelu", MLP)
MLPS.register("swiglu", SwiGLU)
