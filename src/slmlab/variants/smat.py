"""SMAT semantic attention (seed 003), as one attention extension per layer.

On the block's normed input h (B, T, d_model):

    s = W_s h (s_dim),  ŝ = s / ||s||,  S_ij = ŝ_i · ŝ_j
    logits_ij = q_i·k_j / sqrt(D) + λ S_ij + M_ij,   λ = softplus(λ_raw)   (one per layer)
    c_j = (1/n_j) Σ_{l<=j} S_jl = ŝ_j · (Σ_{l<=j} ŝ_l) / n_j               (causal centrality)
    G_j = σ(w_g^T h_j + μ c_j + β)   (one gate per token, or per head)
    out = softmax(logits) (G ⊙ V)

n_j = j (1-based, `centrality_norm = "prefix"`) or the model's block_size ("seq"); dividing by the
actual sequence length would make a token's gate depend on how many tokens follow it, so "seq"
uses the fixed context length and stays causal. W_s is per layer and shared by all heads (the
card's "shared projection"); λ, μ, β are per layer (μ, β per head with gate_per_head).

Fast path: λ S_ij = (√λ ŝ_i)·(√λ ŝ_j), so q' = [q/√D, √λ ŝ] and k' = [k, √λ ŝ] with SDPA at
scale 1 give exactly the biased logits; c is a cumulative sum; G multiplies V. No T x T tensor is
ever built, and the KV cache stores the extra key dimensions (and the running Σ ŝ for c), so
generation is cached too. The naive T x T form lives only in the tests.

Hook points, for interventions (slmlab/interventions.py): hook_s (ŝ, (B, T, s_dim)); with use_S
hook_lambda (λ, scalar); with use_G hook_c (c, (B, T)) and hook_gate (G, (B, T, 1 or H)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..model.hooks import HookPoint


class SemanticAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        smat = cfg.smat
        self.use_S, self.use_G = smat.use_S, smat.use_G
        self.seq_norm = cfg.block_size if smat.centrality_norm == "seq" else 0
        self.w_s = nn.Linear(cfg.d_model, smat.s_dim, bias=False)
        self.hook_s = HookPoint()
        if self.use_S:
            self.lambda_raw = nn.Parameter(torch.tensor(float(smat.lambda_raw_init)))
            self.hook_lambda = HookPoint()
        if self.use_G:
            self.hook_c, self.hook_gate = HookPoint(), HookPoint()
            gates = cfg.n_head if smat.gate_per_head else 1
            self.w_g = nn.Linear(cfg.d_model, gates, bias=False)
            self.mu = nn.Parameter(torch.full((gates,), float(smat.mu_init)))
            self.beta = nn.Parameter(torch.full((gates,), float(smat.beta_init)))

    def centrality(self, s_hat: torch.Tensor, state: dict | None) -> torch.Tensor:
        """c_j for (B, T, s) unit vectors, continuing the prefix sums kept in `state` -> (B, T)."""
        B, T, _ = s_hat.shape
        prefix_sum = s_hat.cumsum(dim=1)
        start = 0
        if state is not None:
            if "s_sum" in state:
                prefix_sum = prefix_sum + state["s_sum"][:, None]
                start = state["count"]
            state["s_sum"], state["count"] = prefix_sum[:, -1], start + T
        if self.seq_norm:
            counts = torch.full((T,), float(self.seq_norm), device=s_hat.device, dtype=s_hat.dtype)
        else:
            counts = torch.arange(start + 1, start + T + 1, device=s_hat.device, dtype=s_hat.dtype)
        return (s_hat * prefix_sum).sum(-1) / counts

    def forward(self, q, k, v, h, scale: float, state: dict | None):
        s_hat = self.hook_s(F.normalize(self.w_s(h), dim=-1))  # (B, T, s)
        if self.use_G:
            c = self.hook_c(self.centrality(s_hat, state))
            gate = self.hook_gate(torch.sigmoid(self.w_g(h) + self.mu * c[..., None] + self.beta))  # (B, T, g)
            v = v * gate.transpose(1, 2)[..., None].to(v.dtype)  # (B, g, T, 1) broadcasts over heads
        if self.use_S:
            lam = self.hook_lambda(F.softplus(self.lambda_raw))
            extra = (lam.sqrt() * s_hat)[:, None].expand(-1, q.shape[1], -1, -1).to(q.dtype)  # (B, H, T, s)
            q = torch.cat([q * scale, extra], dim=-1)
            k = torch.cat([k, extra], dim=-1)
            scale = 1.0
        return q, k, v, scale


def build_smat(cfg: ModelConfig, layer: int) -> nn.Module | None:
    return SemanticAttention(cfg) if cfg.smat.use_S or cfg.smat.use_G else None
