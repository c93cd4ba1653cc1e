"""Small building blocks shared by every architecture: norms and the GELU MLP."""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from ..registry import NORMS

NORMS.register("layernorm", lambda cfg, dim: nn.LayerNorm(dim, eps=cfg.norm_eps, bias=cfg.bias))
NORMS.register("rmsnorm", lambda cfg, dim: nn.RMSNorm(dim, eps=cfg.norm_eps))


def build_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    """The norm `model.norm` names over the last dimension (registry.NORMS: LayerNorm, with bias
    when `cfg.bias`, or RMSNorm)."""
    return NORMS[cfg.norm](cfg, dim or cfg.d_model)


class MLP(nn.Module):
    """x -> proj(GELU(fc(x))), (B, T, d_model) -> (B, T, d_model), hidden width cfg.ff_dim."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)
        self.proj.residual_projection = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.proj(self.act(self.fc(x))))
