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

Hook points, for interventions (model/interventions.py): hook_s (ŝ, (B, T, s_dim)); with use_S
hook_lambda (λ, (1,)); with use_G hook_c (c, (B, T)) and hook_gate (G, (B, T, 1 or H)).

Surgical ablations (seed 003), registered as interventions: λ = 0, S removed, a random S of the
same norm, G replaced by its mean, G forced to 1; `slmlab ablate` also reports the share of S's
effect that goes through the bias vs through the gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..config.checks import check_parameters
from ..errors import ConfigError
from ..model import naive
from ..model.hooks import HookPoint
from ..model.interventions import Intervention, Replace, constant
from ..model.positions import token_positions
from ..registry import (
    ABLATION_SUMMARIES,
    ATTENTION_EXTENSIONS,
    INTERVENTIONS,
    NAIVE_REFERENCES,
    register_model_check,
    register_section,
)


@dataclass
class SmatConfig:
    """SMAT semantic attention (seed 003); the equations are in this module's docstring.

    use_S adds the bias lambda * S_ij, use_G the value gate G_j; both off is the baseline.
    Initial values: lambda_raw 0 (lambda = softplus(0) = 0.69), mu 0 (the gate starts blind to
    centrality but learns to use it), beta 2 (G starts near sigmoid(2) = 0.88, close to identity)."""

    use_S: bool = False  # add the similarity bias lambda * S_ij to the attention logits
    use_G: bool = False  # multiply each value by the gate G_j
    s_dim: int = 32  # width of the semantic projection W_s
    centrality_norm: Literal["prefix", "seq"] = "prefix"  # "prefix": c_j / j ; "seq": c_j / block_size
    gate_per_head: bool = False  # one gate per head, not one per token
    lambda_raw_init: float = 0.0  # lambda = softplus(lambda_raw) at init (0 -> 0.69)
    mu_init: float = 0.0  # the gate's weight on the centrality c_j at init
    beta_init: float = 2.0  # the gate's bias at init (2 -> G near sigmoid(2) = 0.88)


class SemanticAttention(nn.Module):
    host_init = True  # W_s and w_g take the backbone's GPT-2 init (N(0, init_std))

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        smat = cfg.smat
        self.use_S, self.use_G = smat.use_S, smat.use_G
        # S reads each token's own h (padded keys are masked like any key); G's centrality leaves
        # out the padding (state["padding"]) from its sums and counts: left-padded batches are exact
        self.padding_safe = True
        self.seq_norm = cfg.block_size if smat.centrality_norm == "seq" else 0
        self.w_s = nn.Linear(cfg.d_model, smat.s_dim, bias=False)
        self.hook_s = HookPoint()
        if self.use_S:
            # (1,), not 0-dim: FSDP2 shards no scalar parameter
            self.lambda_raw = nn.Parameter(torch.full((1,), float(smat.lambda_raw_init)))
            self.hook_lambda = HookPoint()
            self.register_load_state_dict_pre_hook(_lambda_saved_as_a_scalar)
        if self.use_G:
            self.hook_c, self.hook_gate = HookPoint(), HookPoint()
            gates = cfg.n_head if smat.gate_per_head else 1
            self.w_g = nn.Linear(cfg.d_model, gates, bias=False)
            self.mu = nn.Parameter(torch.full((gates,), float(smat.mu_init)))
            self.beta = nn.Parameter(torch.full((gates,), float(smat.beta_init)))

    def centrality(self, s_hat: torch.Tensor, state: dict | None) -> torch.Tensor:
        """c_j for (B, T, s) unit vectors, continuing the prefix sums kept in `state` -> (B, T).
        In a left-padded batch (state["padding"] (B,)) row b's first padding[b] entries are left
        out of the sums and j counts from its first token, so each row gets its c alone (c = 0
        at the padding, which attention never reads)."""
        _, T, _ = s_hat.shape
        start = state.get("count", 0) if state is not None else 0
        padding = state.get("padding") if state is not None else None
        steps, real = token_positions(start, T, padding, s_hat.device)  # (T,), or (B, T) from each row's first token
        if real is not None:
            s_hat = s_hat * real.to(s_hat.dtype)[..., None]
        prefix_sum = s_hat.cumsum(dim=1)
        if state is not None:
            if "s_sum" in state:
                prefix_sum = prefix_sum + state["s_sum"][:, None]
            state["s_sum"], state["count"] = prefix_sum[:, -1].clone(), start + T  # (a view would keep (B, T, s) alive)
        counts = float(self.seq_norm) if self.seq_norm else (steps + 1).to(s_hat.dtype)  # n_j: block_size, or j
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


def _lambda_saved_as_a_scalar(module, state_dict, prefix, *_) -> None:
    """Weights saved before 2026-12-05 hold lambda_raw 0-dim: loaded as the (1,) it is now."""
    key = prefix + "lambda_raw"
    if key in state_dict and state_dict[key].dim() == 0:
        state_dict[key] = state_dict[key].reshape(1)


def build_smat(cfg: ModelConfig, layer: int) -> nn.Module | None:
    return SemanticAttention(cfg) if cfg.smat.use_S or cfg.smat.use_G else None


ATTENTION_EXTENSIONS.register("smat", build_smat)
register_section(
    "smat",
    SmatConfig,
    extends="attention",
    read_with={
        "s_dim": ("use_S", "use_G"),
        "lambda_raw_init": ("use_S",),
        **{gate_setting: ("use_G",) for gate_setting in ("centrality_norm", "gate_per_head", "mu_init", "beta_init")},
    },
)


@register_model_check
def check_smat(m: ModelConfig) -> None:
    if m.smat.s_dim <= 0:
        raise ConfigError(f"model.smat.s_dim must be > 0, got {m.smat.s_dim}")
    if m.smat.use_S or m.smat.use_G:
        check_parameters(m.n_layer * m.smat.s_dim * m.d_model, f"model.smat.s_dim = {m.smat.s_dim}, model.n_layer = {m.n_layer}")


def naive_attention(
    attn, h: torch.Tensor, norm_len: int = 0, positions: torch.Tensor | None = None, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """The naive reference of one attention layer's forward (no cache; q, k rotated at
    `positions` when given): softmax(QK^T/sqrt(D) + λS + M)(G ⊙ V) with explicit (T, T)
    matrices, then W_o. M is -inf where `allowed` (T, T) is False (default: causal, j <= i; a
    block-local layer's window: model/naive.py's allowed_keys); the centrality c sums over the
    whole causal prefix whatever the pattern. The tests and `slmlab check` hold the fast path to
    it; the benchmarks time it as the cost of the naive form."""
    B, T, C = h.shape
    H, D = attn.n_head, attn.head_dim
    q, k, v = attn.qkv(h).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
    if positions is not None:
        q, k = attn._positions[0].rotate(q, k, positions)
    logits = q @ k.transpose(-1, -2) / math.sqrt(D)
    causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
    allowed = causal if allowed is None else allowed
    for ext in attn.extensions:
        s = ext.w_s(h)
        s_hat = s / s.norm(dim=-1, keepdim=True)
        S = s_hat @ s_hat.transpose(-1, -2)  # (B, T, T)
        if ext.use_S:
            logits = logits + torch.nn.functional.softplus(ext.lambda_raw) * S[:, None]
        if ext.use_G:
            n = (
                torch.full((T,), float(norm_len), device=h.device)
                if norm_len
                else torch.arange(1, T + 1, dtype=h.dtype, device=h.device)
            )
            c = (S * causal).sum(-1) / n  # mean over l <= j
            gate = torch.sigmoid(ext.w_g(h) + ext.mu * c[..., None] + ext.beta)
            v = v * gate.transpose(1, 2)[..., None]
    weights = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    y = (weights @ v).transpose(1, 2).reshape(B, T, C)
    return attn.proj(y)


def reference(attn, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
    """`slmlab check`'s naive reference for a layer whose one extension is SMAT, under a pattern
    whose allowed keys are written out (full causal, block-local)."""
    allowed = naive.allowed_keys(attn.pattern, h.shape[1], h.device)
    if allowed is None or [type(e) for e in attn.extensions] != [SemanticAttention]:
        return None
    return naive_attention(attn, h, attn.extensions[0].seq_norm, positions, allowed)


NAIVE_REFERENCES.register("smat", reference)


# ---- surgical ablations ----------------------------------------------------------------------


def _random_same_norm(seed: int = 0) -> Replace:
    """Replace ŝ (B, T, s) by Gaussian r scaled so that ||r r^T||_F = ||ŝ ŝ^T||_F per sequence.

    ||A A^T||_F = ||A^T A||_F, so the (s, s) Gram matrices give the norms without a T x T tensor."""
    generator = torch.Generator().manual_seed(seed)

    def replace(s_hat: torch.Tensor) -> torch.Tensor:
        r = torch.randn(s_hat.shape, generator=generator, dtype=torch.float32).to(s_hat)
        target = torch.linalg.matrix_norm(s_hat.transpose(1, 2) @ s_hat)
        current = torch.linalg.matrix_norm(r.transpose(1, 2) @ r)
        return r * (target / current).sqrt()[:, None, None]

    return replace


def _mean_over_tokens(gate: torch.Tensor) -> torch.Tensor:
    return gate.mean(dim=(0, 1), keepdim=True).expand_as(gate)


INTERVENTIONS.register(
    "smat",
    {
        i.name: i
        for i in (
            Intervention(
                "lambda_zero",
                "λ = 0: no similarity bias in attention; S still drives the gate's centrality c",
                {"hook_lambda": constant(torch.zeros_like)},
                owner=SemanticAttention,
            ),
            Intervention(
                "s_removed",
                "S removed entirely: no bias (λ = 0) and c = 0 in the gate",
                {"hook_lambda": constant(torch.zeros_like), "hook_c": constant(torch.zeros_like)},
                owner=SemanticAttention,
            ),
            Intervention(
                "random_s",
                "S replaced by a random S of the same Frobenius norm (bias and c)",
                {"hook_s": _random_same_norm},
                owner=SemanticAttention,
            ),
            Intervention(
                "gate_mean",
                "G replaced by its mean over all tokens of the batch",
                {"hook_gate": constant(_mean_over_tokens)},
                owner=SemanticAttention,
            ),
            Intervention(
                "gate_one",
                "G forced to 1.0 (as if use_G were off)",
                {"hook_gate": constant(torch.ones_like)},
                owner=SemanticAttention,
            ),
        )
    },
)


def route_shares(delta_lambda_zero: float, delta_s_removed: float) -> tuple[float, float]:
    """Share of S's effect through the attention bias vs through the gate (seed 003's split):
    bias = Δ(λ=0) / Δ(S removed), gate = 1 - bias. NaN when removing S changes nothing."""
    if not math.isfinite(delta_s_removed) or abs(delta_s_removed) < 1e-12:
        return math.nan, math.nan
    bias = delta_lambda_zero / delta_s_removed
    return bias, 1.0 - bias


def summarize_ablations(rows: dict) -> tuple[str, dict] | None:
    """The bias/gate split of S's effect, from the lambda_zero and s_removed rows of `slmlab ablate`."""
    if "lambda_zero" not in rows or "s_removed" not in rows:
        return None
    removed = rows["s_removed"]
    bias, gate = route_shares(rows["lambda_zero"]["delta_pct"], removed["delta_pct"])
    text = (
        f"S's effect (Δ of removing S = {removed['delta_pct']:+.2f}%): "
        f"{100 * bias:.0f}% through the attention bias λ·S, {100 * gate:.0f}% through the gate's μ·c"
    )
    low, high = removed.get("delta_pct_low", math.nan), removed.get("delta_pct_high", math.nan)
    if low <= 0 <= high:  # a share of an effect not told apart from none is no finding
        text += f" (not resolved: removing S moves perplexity by {low:+.2f}% to {high:+.2f}%, which includes no change)"
    return text, {"s_effect_share": {"attention_bias": bias, "gate": gate}}


ABLATION_SUMMARIES.register("smat", summarize_ablations)
