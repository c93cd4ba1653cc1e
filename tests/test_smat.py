"""SMAT's fast path (extra q/k dims, cumulative centrality, gated V) equals a naive T x T reference."""

from __future__ import annotations

import math

import pytest
import torch

from slmlab.config import ModelConfig
from slmlab.variants.smat import SmatConfig
from slmlab.model import KVCache, build_model

VARIANTS = {"baseline": (False, False), "s_only": (True, False), "g_only": (False, True), "full": (True, True)}


def smat_model(variant: str, **smat_fields) -> torch.nn.Module:
    use_S, use_G = VARIANTS[variant]
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=37, n_layer=2, n_head=2, d_model=16, block_size=24,
                      smat=SmatConfig(use_S=use_S, use_G=use_G, s_dim=6, lambda_raw_init=0.7, mu_init=0.8, **smat_fields))
    model = build_model(cfg).double()
    with torch.no_grad():  # move the gate's parameters off their init so every term matters
        for module in model.modules():
            if hasattr(module, "beta"):
                module.beta.uniform_(-1, 1)
    return model


def naive_attention(attn, h: torch.Tensor, norm_len: int = 0) -> torch.Tensor:
    """softmax(QK^T/sqrt(D) + λS + M)(G ⊙ V) with explicit (T, T) matrices, then W_o."""
    B, T, C = h.shape
    H, D = attn.n_head, attn.head_dim
    q, k, v = attn.qkv(h).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / math.sqrt(D)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for ext in attn.extensions:
        s = ext.w_s(h)
        s_hat = s / s.norm(dim=-1, keepdim=True)
        S = s_hat @ s_hat.transpose(-1, -2)  # (B, T, T)
        if ext.use_S:
            logits = logits + torch.nn.functional.softplus(ext.lambda_raw) * S[:, None]
        if ext.use_G:
            n = torch.full((T,), float(norm_len)) if norm_len else torch.arange(1, T + 1, dtype=h.dtype)
            c = (S * causal).sum(-1) / n  # mean over l <= j
            gate = torch.sigmoid(ext.w_g(h) + ext.mu * c[..., None] + ext.beta)
            v = v * gate.transpose(1, 2)[..., None]
    weights = logits.masked_fill(~causal, float("-inf")).softmax(-1)
    y = (weights @ v).transpose(1, 2).reshape(B, T, C)
    return attn.proj(y)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("smat_fields", [{}, {"gate_per_head": True, "centrality_norm": "seq"}])
def test_fast_path_matches_naive_reference_forward_and_backward(variant, smat_fields):
    model = smat_model(variant, **smat_fields)
    attn = model.blocks[1].attn
    h = torch.randn(3, 20, 16, dtype=torch.float64, requires_grad=True)
    positions = torch.arange(20)
    fast = attn(h, positions)
    norm_len = model.cfg.block_size if smat_fields.get("centrality_norm") == "seq" else 0
    naive = naive_attention(attn, h, norm_len)
    torch.testing.assert_close(fast, naive, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(fast)
    params = [h, *attn.parameters()]
    grads_fast = torch.autograd.grad((fast * weights).sum(), params)
    grads_naive = torch.autograd.grad((naive * weights).sum(), params)
    assert len(params) == {"baseline": 5, "s_only": 7, "g_only": 9, "full": 10}[variant]
    for g_fast, g_naive in zip(grads_fast, grads_naive):
        torch.testing.assert_close(g_fast, g_naive, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_generation_equals_full_recomputation(variant):
    model = smat_model(variant, gate_per_head=True).eval()
    idx = torch.randint(0, 37, (2, 22))
    full, _ = model(idx)
    caches = [KVCache(24) for _ in model.blocks]
    parts = [model(idx[:, :9], caches=caches)[0]]
    parts += [model(idx[:, t : t + 1], caches=caches)[0] for t in range(9, 16)]
    parts.append(model(idx[:, 16:], caches=caches)[0])
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-10, atol=1e-10)
    if VARIANTS[variant][0]:
        assert caches[0].k.shape[-1] == 8 + 6  # the cache holds the extra key dimensions


def test_full_smat_is_causal():
    model = smat_model("full")
    idx = torch.randint(0, 37, (2, 20))
    base, _ = model(idx)
    changed = idx.clone()
    changed[:, 12] = (changed[:, 12] + 1) % 37
    logits, _ = model(changed)
    assert torch.equal(logits[:, :12], base[:, :12]) and not torch.allclose(logits[:, 12], base[:, 12])


def test_every_smat_parameter_receives_gradient():
    model = smat_model("full").train()
    idx = torch.randint(0, 37, (2, 20))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_smat_configs_and_parameter_cost():
    base = smat_model("baseline")
    full = smat_model("full", gate_per_head=True)
    extra = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in base.parameters())
    assert extra == 2 * (16 * 6 + 1 + 16 * 2 + 2 + 2)  # per layer: W_s, λ_raw, w_g, μ, β
