"""moe: a top-k mixture-of-experts MLP with its load-balancing loss (a plugin, chosen by
`model.mlp = "moe"`).

For the normed block input x_t (d_model) of each token t, E experts of hidden width w = d_ff / E
(so that with top_k = E every expert together is the dense MLP's width), router logits r_t = R x_t:

    S_t      = the top_k experts by r_t
    g_t,e    = softmax over S_t of r_t,e                        (Mixtral's gate)
    out_t    = sum_{e in S_t} g_t,e W2_e GELU(W1_e x_t + b1_e)  (each expert runs only its tokens)

and two auxiliary terms of the training objective (model/auxiliary.py), never of the scored loss:

    balance  = α E sum_e f_e P_e      f_e: the share of (token, slot) pairs routed to e,
                                      P_e: the mean router probability softmax(r_t)_e (Switch)
    z_loss   = β mean_t logsumexp(r_t)^2                                               (ST-MoE)

The experts' weights are one (E, ...) tensor each, so every step reaches every expert's weights
(zero where no token chose it): DDP and FSDP2 train it as one process does. FLOPs in `slmlab
info` count the top_k experts a token runs, not all E.

    slmlab check examples/plugins/moe.toml
    slmlab sweep examples/plugins/moe_sweep.toml --jobs 2     dense vs MoE at equal training FLOPs
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slmlab.errors import ConfigError
from slmlab.registry import MLPS, register_model_check, register_section


@dataclass
class MoeConfig:
    """[model.moe] (read only while model.mlp = "moe")."""

    experts: int = 4
    top_k: int = 2
    balance: float = 0.01  # α
    z_loss: float = 0.001  # β


class MoE(nn.Module):
    """(B, T, d_model) -> (B, T, d_model); `auxiliary_loss()` gives the latest forward's terms."""

    def __init__(self, cfg):
        super().__init__()
        moe, d = cfg.moe, cfg.d_model
        width = cfg.ff_dim // moe.experts
        self.experts, self.top_k, self.balance, self.z = moe.experts, moe.top_k, moe.balance, moe.z_loss
        self.router = nn.Linear(d, moe.experts, bias=False)
        self.w1 = nn.Parameter(torch.randn(moe.experts, d, width) * cfg.init_std)
        self.b1 = nn.Parameter(torch.zeros(moe.experts, width))
        self.w2 = nn.Parameter(torch.randn(moe.experts, width, d) * cfg.init_std / math.sqrt(2 * cfg.n_layer))
        self.terms: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        logits = self.router(flat)  # (N, E)
        top, chosen = logits.topk(self.top_k, dim=-1)  # (N, k)
        gates = top.softmax(-1)
        out = torch.zeros_like(flat)
        for e in range(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            hidden = F.gelu(flat[rows] @ self.w1[e] + self.b1[e])
            out = out.index_add(0, rows, (hidden @ self.w2[e]) * gates[rows, slot, None])
        share = torch.bincount(chosen.flatten(), minlength=self.experts).to(logits.dtype) / chosen.numel()
        balance = self.balance * self.experts * (share * logits.softmax(-1).mean(0)).sum()
        self.terms = balance + self.z * logits.logsumexp(-1).pow(2).mean()
        return out.reshape(x.shape)

    def auxiliary_loss(self) -> torch.Tensor | None:
        return self.terms

    def naive(self, x: torch.Tensor) -> torch.Tensor:
        """The MoE written out token by token, for slmlab check's whole-model reference."""
        flat = x.reshape(-1, x.shape[-1])
        rows = []
        for token in flat:
            logits = self.router.weight @ token
            best = sorted(range(self.experts), key=lambda e: -logits[e].item())[: self.top_k]
            gates = torch.softmax(torch.stack([logits[e] for e in best]), 0)
            rows.append(sum(g * (F.gelu(token @ self.w1[e] + self.b1[e]) @ self.w2[e]) for g, e in zip(gates, best)))
        return torch.stack(rows).reshape(x.shape)


MLPS.register("moe", MoE)
register_section("moe", MoeConfig, chosen_by="model.mlp")


@register_model_check
def check_moe(m) -> None:
    """Rules on [model.moe], each one line saying what to fix."""
    moe = m.moe
    if moe.experts < 1 or m.ff_dim % moe.experts:
        raise ConfigError(f"model.moe.experts = {moe.experts} must divide the MLP width model.d_ff = {m.ff_dim}")
    if not 1 <= moe.top_k <= moe.experts:
        raise ConfigError(f"model.moe.top_k must be from 1 to model.moe.experts = {moe.experts}, got {moe.top_k}")
    for key in ("balance", "z_loss"):
        value = getattr(moe, key)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"model.moe.{key} must be a finite number >= 0, got {value}")
