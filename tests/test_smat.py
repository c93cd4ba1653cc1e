"""SMAT's fast path (extra q/k dims, cumulative centrality, gated V) equals a naive T x T reference."""

from __future__ import annotations

import copy

import pytest
import torch

from slmlab.config import ModelConfig
from slmlab.model import KVCache, build_model
from slmlab.variants.smat import SmatConfig, naive_attention

VARIANTS = {"baseline": (False, False), "s_only": (True, False), "g_only": (False, True), "full": (True, True)}


def smat_model(variant: str, pattern: dict | None = None, **smat_fields) -> torch.nn.Module:
    """A 2-layer SMAT model in float64, its gates moved off their init; `pattern`: attention fields."""
    use_S, use_G = VARIANTS[variant]
    torch.manual_seed(0)
    cfg = ModelConfig(
        **(pattern or {}),
        vocab_size=37,
        n_layer=2,
        n_head=2,
        d_model=16,
        block_size=24,
        smat=SmatConfig(use_S=use_S, use_G=use_G, s_dim=6, lambda_raw_init=0.7, mu_init=0.8, **smat_fields),
    )
    model = build_model(cfg).double()
    with torch.no_grad():  # move the gate's parameters off their init so every term matters
        for module in model.modules():
            if hasattr(module, "beta"):
                module.beta.uniform_(-1, 1)
    return model


def allowed_keys(T: int, block: int | None, device) -> torch.Tensor:
    """(T, T): key j <= i, and under block-local attention of block B in query i's block or the one before."""
    i, j = torch.arange(T, device=device)[:, None], torch.arange(T, device=device)[None, :]
    return (j <= i) if block is None else (j <= i) & (j // block >= i // block - 1)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("smat_fields", [{}, {"gate_per_head": True, "centrality_norm": "seq"}])
@pytest.mark.parametrize("block", [None, 4], ids=["full", "block_local"])
def test_fast_path_matches_naive_reference_forward_and_backward(variant, smat_fields, block, device):
    """Under block-local attention (B = 4: 20 tokens in 5 blocks) the bias λS and the gated values
    reach only the keys of the query's window; the centrality c still sums the whole prefix."""
    pattern = {"attention": "block_local", "local_block": block} if block else {}
    model = smat_model(variant, pattern, **smat_fields).to(device)
    attn = model.blocks[1].attn
    h = torch.randn(3, 20, 16, dtype=torch.float64).to(device).requires_grad_()
    positions = torch.arange(20, device=device)
    fast = attn(h, positions)
    norm_len = model.cfg.block_size if smat_fields.get("centrality_norm") == "seq" else 0
    naive = naive_attention(attn, h, norm_len, allowed=allowed_keys(20, block, device))
    torch.testing.assert_close(fast, naive, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(fast)
    params = [h, *attn.parameters()]
    grads_fast = torch.autograd.grad((fast * weights).sum(), params)
    grads_naive = torch.autograd.grad((naive * weights).sum(), params)
    assert len(params) == {"baseline": 5, "s_only": 7, "g_only": 9, "full": 10}[variant]
    for g_fast, g_naive in zip(grads_fast, grads_naive):
        torch.testing.assert_close(g_fast, g_naive, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_generation_equals_full_recomputation(variant, device):
    model = smat_model(variant, gate_per_head=True).eval().to(device)
    idx = torch.randint(0, 37, (2, 22)).to(device)
    full, _ = model(idx)
    caches = [KVCache(24) for _ in model.blocks]
    parts = [model(idx[:, :9], caches=caches)[0]]
    parts += [model(idx[:, t : t + 1], caches=caches)[0] for t in range(9, 16)]
    parts.append(model(idx[:, 16:], caches=caches)[0])
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-10, atol=1e-10)
    if VARIANTS[variant][0]:
        assert caches[0].k.shape[-1] == 8 + 6  # the cache holds the extra key dimensions


def test_full_smat_is_causal(device):
    model = smat_model("full").to(device)
    idx = torch.randint(0, 37, (2, 20)).to(device)
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


def test_a_run_saved_with_a_0_dim_lambda_loads_and_resumes_as_it_is_now():
    """λ's raw parameter became (1,) on 2026-12-05 (FSDP2 shards no 0-dim parameter, so SMAT could
    not train under it): weights and AdamW moments saved 0-dim load into the (1,) parameter, and
    training goes on exactly as from the same state saved (1,)."""
    from slmlab.training.distributed import full_optimizer_state, load_optimizer_state

    def step(model, optimizer):
        model(torch.arange(20)[None] % 37, torch.arange(1, 21)[None] % 37)[1].backward()
        optimizer.step()
        optimizer.zero_grad()

    model = smat_model("full")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    step(model, optimizer)
    weights, state = model.state_dict(), full_optimizer_state(model, optimizer)
    legacy_weights = {name: t.reshape(()) if name.endswith("lambda_raw") else t for name, t in weights.items()}
    legacy_state = {
        "param_groups": state["param_groups"],
        "state": {
            name: {k: v.reshape(()) if name.endswith("lambda_raw") and k != "step" else v for k, v in entries.items()}
            for name, entries in state["state"].items()
        },
    }
    assert any(t.dim() == 0 for name, t in legacy_weights.items() if name.endswith("lambda_raw"))
    resumed = {}
    for name, (saved_weights, saved_state) in {"now": (weights, state), "legacy": (legacy_weights, legacy_state)}.items():
        fresh = smat_model("full")
        fresh.load_state_dict(saved_weights)
        fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
        load_optimizer_state(fresh, fresh_optimizer, copy.deepcopy(saved_state))  # (AdamW steps its moments in place)
        step(fresh, fresh_optimizer)
        resumed[name] = fresh.state_dict()
    assert all(torch.equal(resumed["now"][k], resumed["legacy"][k]) for k in resumed["now"])
    assert resumed["legacy"]["blocks.0.attn.extensions.0.lambda_raw"].shape == (1,)
