"""The TapeTransformer notebook's (seed 001) sign-agreement optimizer, registered as
train.optimizer = "wolf": any model trains with it, the TapeTransformer's presets among them."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig
from ..registry import OPTIMIZERS


class Wolf(torch.optim.Optimizer):
    """The TapeTransformer notebook's sign-agreement optimizer. With c = 1/e, per parameter:

        u = (1 − c) m + c g              the step candidate (an EMA of the gradient)
        m ← (1 − c) m + c u              the state
        p ← p − lr u   where sign(u) = sign(g), else p unchanged

    No weight decay (a group's weight_decay is ignored)."""

    C = math.exp(-1.0)

    def __init__(self, params, lr: float = 0.25):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                m = state.setdefault("m", torch.zeros_like(p))
                u = (1 - self.C) * m + self.C * p.grad
                m.mul_(1 - self.C).add_(u, alpha=self.C)
                p.sub_(torch.where(torch.sign(u) * torch.sign(p.grad) > 0, u, torch.zeros_like(u)), alpha=group["lr"])
        return loss


@OPTIMIZERS.register("wolf")
def build_wolf(model: nn.Module, cfg: TrainConfig, device: torch.device) -> Wolf:
    """Wolf over every trainable parameter (it applies no weight decay)."""
    return Wolf([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
