"""LM heads (`model.head`): hidden states (N, D) -> logits (N, V), and the loss against targets.

    linear:     logits_v = h · w_v; the loss through the fused chunked cross-entropy (loss.py)
    student_t:  log p_v = -(ν + D)/2 · log(1 + ‖h − w_v‖² / ν) − log Z   (ν = e by default)
                a heavy-tailed distance head (seed 001's unembedding); ‖h − w_v‖² = ‖h‖² − 2 h·w_v +
                ‖w_v‖² through one matmul, never an (N, V, D) tensor

Both keep their (V, D) matrix in `.weight`, so it can be tied to the token embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..registry import HEADS, require_members
from .loss import linear_cross_entropy


class LinearHead(nn.Linear):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg.d_model, cfg.vocab_size, bias=False)

    def loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(h, self.weight, targets)


class StudentTHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.nu = cfg.student_t_nu
        self.weight = nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        nn.init.normal_(self.weight, std=cfg.init_std)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(..., D) -> unnormalised log-probabilities (..., V)."""
        w = self.weight.to(h.dtype)
        distance = (h * h).sum(-1, keepdim=True) - 2 * h @ w.T + (w * w).sum(-1)
        return -(self.nu + h.shape[-1]) / 2 * torch.log1p(distance.clamp_min(0) / self.nu)

    def loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy; a negative target (-100, -1) is ignored, as by the linear head."""
        logits = self(h)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32; fp64 stays
        return F.cross_entropy(logits, torch.where(targets < 0, -100, targets), ignore_index=-100)


HEADS.register("linear", LinearHead)
HEADS.register("student_t", StudentTHead)


def build_head(cfg: ModelConfig) -> nn.Module:
    """The LM head `model.head` names (registry.HEADS)."""
    return require_members(HEADS[cfg.head](cfg), "LM head", cfg.head, ("weight", "loss"))
