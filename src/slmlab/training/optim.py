"""Optimizers (AdamW with decoupled weight decay on matrices only; seed 001's Wolf) and the warmup
+ cosine LR schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay 2-D+ weights of linear layers; not norms, biases or embeddings (incl. a tied head)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 and id(param) not in embedding_ids else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


NORMS = (nn.LayerNorm, nn.RMSNorm)


def select_trainable(model: nn.Module, which: str) -> int:
    """Freeze every parameter outside `which` ("all", "self_area", "self_area+norms": SMT's stage 2
    choices); returns the number of trainable parameters."""
    if which != "all":
        keep = {id(p) for p in model.conditioning.parameters()}
        if which == "self_area+norms":
            keep |= {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters()}
        for param in model.parameters():
            param.requires_grad_(id(param) in keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


FUSED_DEVICES = ("cuda", "cpu", "mps", "xpu")


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


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, with the fused kernel wherever PyTorch has one (CUDA, CPU, MPS, XPU); or Wolf."""
    if cfg.optimizer == "wolf":
        return Wolf(param_groups(model, 0.0), lr=cfg.lr)
    fused = device.type in FUSED_DEVICES
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
        fused=fused, foreach=None if fused else True,
    )


def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """optimizer.step(), except where `skip` (a 0-dim float tensor on the device, 1 = skip) is set:
    then parameters, moments and step count stay as they were. A fused optimizer takes `skip` as
    its `found_inf` input (the mechanism torch.amp.GradScaler uses), so the host never waits for
    the device; any other optimizer reads it."""
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = skip
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not skip.item():
        optimizer.step()


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over warmup_steps, then cosine from lr down to lr * min_lr_ratio at `steps`.

    lr(s) = lr * (s + 1) / warmup                                  for s < warmup
    lr(s) = floor + (lr - floor) * (1 + cos(pi * p)) / 2,  p = (s - warmup) / (steps - warmup)"""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
