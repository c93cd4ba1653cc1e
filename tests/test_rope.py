"""RoPE: relative positions, linear scaling as position interpolation, cache consistency."""

from __future__ import annotations

import math

import pytest
import torch

from slmlab.config import ModelConfig
from slmlab.model import KVCache, build_model
from slmlab.model.positions import RotaryPositions


def rope(**fields) -> RotaryPositions:
    return RotaryPositions(ModelConfig(d_model=64, n_head=2, pos="rope", **fields))


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_scores_depend_only_on_relative_position(fraction):
    positions = rope(rope_fraction=fraction)
    torch.manual_seed(0)
    q = torch.randn(1, 1, 1, 32, dtype=torch.float64).expand(1, 1, 40, 32)  # the same vector everywhere
    k = torch.randn(1, 1, 1, 32, dtype=torch.float64).expand(1, 1, 40, 32)
    rq, rk = positions.rotate(q, k, torch.arange(40))
    scores = (rq @ rk.transpose(-1, -2))[0, 0]
    for offset in (-7, 0, 3, 12):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(torch.diagonal(scores, 0)[:1], torch.diagonal(scores, 5)[:1])


def test_rotation_keeps_norms_and_leaves_the_unrotated_part():
    q = torch.randn(2, 2, 10, 32)
    rq, _ = rope(rope_fraction=0.5).rotate(q, q, torch.arange(10))
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    assert torch.equal(rq[..., 16:], q[..., 16:]) and not torch.allclose(rq[..., :16], q[..., :16])


def test_scaled_rope_equals_unscaled_at_interpolated_positions():
    q, k = torch.randn(2, 1, 2, 8, 32, dtype=torch.float64)
    positions = torch.arange(8)
    scaled = rope(rope_scale=2.0).rotate(q, k, positions * 2)
    plain = rope().rotate(q, k, positions)
    for a, b in zip(scaled, plain):
        torch.testing.assert_close(a, b)


def test_rope_model_is_causal_and_cached_generation_matches_recomputation():
    torch.manual_seed(0)
    model = (
        build_model(ModelConfig(vocab_size=40, n_layer=2, n_head=2, d_model=32, block_size=32, pos="rope", rope_fraction=0.5))
        .double()
        .eval()
    )
    assert not any("wpe" in n for n, _ in model.named_parameters()) and not list(model.buffers())
    idx = torch.randint(0, 40, (2, 30))
    full, _ = model(idx)
    changed = idx.clone()
    changed[:, 20] = (changed[:, 20] + 1) % 40
    assert torch.equal(model(changed)[0][:, :20], full[:, :20])
    caches = [KVCache(32) for _ in model.blocks]
    parts = [model(idx[:, :11], caches=caches)[0]] + [model(idx[:, t : t + 1], caches=caches)[0] for t in range(11, 30)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-10, atol=1e-10)
    longer, _ = model(torch.randint(0, 40, (1, 64)))  # no stored tables: runs past the training context
    assert longer.shape == (1, 64, 40)


def naive_rope(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, theta=10000.0, scale=1.0) -> torch.Tensor:
    """Pair by pair, in float64: (x_i, x_{i+r/2}) times the 2 x 2 rotation by (p / scale) theta^(-2i/r)."""
    out, half = x.double().clone(), rotary_dim // 2
    rows = positions if positions.dim() == 2 else positions.expand(x.shape[0], -1)
    for b in range(x.shape[0]):
        for t in range(x.shape[2]):
            for i in range(half):
                angle = rows[b, t].item() / scale * theta ** (-i / half)
                c, s = math.cos(angle), math.sin(angle)
                a, z = x[b, :, t, i].double(), x[b, :, t, i + half].double()
                out[b, :, t, i], out[b, :, t, i + half] = a * c - z * s, a * s + z * c
    return out


@pytest.mark.parametrize("fraction", [1.0, 0.5])
@pytest.mark.parametrize("per_row", [False, True])
def test_rotation_equals_the_pairwise_rotation_matrices(fraction, per_row):
    positions = rope(rope_fraction=fraction, rope_scale=1.5)
    torch.manual_seed(0)
    q, k = torch.randn(2, 2, 3, 6, 32, dtype=torch.float64)
    where = torch.tensor([[0, 0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]) if per_row else torch.arange(3, 9)
    where = where + 4090  # far out, where float32 angles would be off by ~1e-4 rad
    rq, rk = positions.rotate(q, k, where)
    close = {"rtol": 0, "atol": 1e-11}  # float64 tensors are rotated by float64 angles (~4e3 rad, rounded)
    torch.testing.assert_close(rq, naive_rope(q, where, positions.rotary_dim, scale=1.5), **close)
    torch.testing.assert_close(rk, naive_rope(k, where, positions.rotary_dim, scale=1.5), **close)


def test_tables_are_made_once_per_forward_and_again_for_new_or_changed_positions(monkeypatch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=40, n_layer=3, n_head=2, d_model=32, block_size=32, pos="rope")).eval()
    calls = []
    angles = model.positions.angles
    monkeypatch.setattr(model.positions, "angles", lambda p, dtype: calls.append(p) or angles(p, dtype))
    idx = torch.randint(0, 40, (2, 12))
    first, _ = model(idx)
    model(idx)
    assert len(calls) == 2  # one per forward, not one per layer
    where = torch.arange(5)
    q = torch.randn(1, 2, 5, 16)
    before = model.positions.rotate(q, q, where)[0]
    where += 3  # the same tensor, changed in place: the tables follow it
    after = model.positions.rotate(q, q, where)[0]
    torch.testing.assert_close(after, model.positions.rotate(q, q, torch.arange(3, 8))[0])
    assert not torch.allclose(before, after)
    torch.testing.assert_close(model(idx)[0], first, rtol=0, atol=0)


def test_bad_rope_settings_are_rejected():
    from slmlab.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="model.rope_fraction must be in"):
        config_from_dict({"model": {"pos": "rope", "rope_fraction": 0.0}})
    with pytest.raises(ConfigError, match="model.rope_scale must be > 0"):
        config_from_dict({"model": {"pos": "rope", "rope_scale": -1.0}})


def test_sinusoidal_table_of_a_float64_model_is_the_float64_formula_and_float32_stays_float32():
    """PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(...), written out in float64 at far positions
    (float32 angles are off by ~1e-4 rad there); a float32 model keeps float32 tables."""
    model = build_model(ModelConfig(vocab_size=40, n_layer=1, n_head=2, d_model=10, block_size=16, pos="sinusoidal"))
    where = torch.arange(4090, 4096)
    expected = torch.tensor(
        [[(math.sin if i % 2 == 0 else math.cos)(t / 10000 ** ((i - i % 2) / 10)) for i in range(10)] for t in where.tolist()],
        dtype=torch.float64,
    )
    assert model.positions.embed(where).dtype == torch.float32
    table = model.double().positions.embed(where)
    assert table.dtype == torch.float64
    torch.testing.assert_close(table, expected, rtol=0, atol=1e-11)  # float64 rounding of angles ~4e3
    assert "positions.dtype_probe" not in model.state_dict()  # nothing stored: checkpoints are unchanged


@pytest.mark.parametrize("pos", ["learned", "rope", "sinusoidal"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_model_cast_to_half_precision_runs_with_every_position_scheme(pos, dtype):
    """The sinusoidal table used to stay float32 and turn a bf16 model's residual stream float32,
    which its bf16 layers then refused ("mixed dtype")."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=40, n_layer=2, n_head=2, d_model=16, block_size=16, pos=pos)).to(dtype).eval()
    logits, _ = model(torch.randint(0, 40, (2, 8)))
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    assert model.generate(torch.randint(0, 40, (1, 4)), 3).shape == (1, 7)


def test_a_position_table_in_another_dtype_joins_the_stream_in_the_models_dtype(monkeypatch):
    """A plugin scheme's float32 table turned a bf16 model's stream float32 ("mixed dtype")."""
    model = build_model(ModelConfig(vocab_size=40, n_layer=1, n_head=2, d_model=16, block_size=16)).to(torch.bfloat16)
    table = model.positions.wpe.weight.float()
    monkeypatch.setattr(model.positions, "embed", lambda positions: table[positions])
    logits, _ = model(torch.randint(0, 40, (2, 8)))
    assert logits.dtype == torch.bfloat16


def test_a_model_of_a_vast_context_decodes_a_short_text_with_caches_of_that_text(monkeypatch):
    """RoPE holds no table, so block_size = 10**9 trains at any seq_len; but generating allocated
    every layer's KV cache for the whole context (64 GB here), so the sample at the end of
    training failed and the run was left without its summary. A whole-context cache now holds the
    prompt and the new tokens; a windowed one (block-local) keeps its own size."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, n_layer=2, n_head=2, d_model=16, block_size=10**9, pos="rope")
    cfg.attention, cfg.local_block, cfg.global_every = "block_local", 4, 2  # layer 1 attends the whole context
    model = build_model(cfg).eval()
    made = []
    real = model.make_caches
    monkeypatch.setattr(model, "make_caches", lambda *size: made.extend(real(*size)) or made)
    prompt = torch.randint(0, 40, (1, 7))
    cached = model.generate(prompt, 5, temperature=0.0)
    assert torch.equal(cached, model.generate(prompt, 5, temperature=0.0, use_cache=False))
    fresh = real()
    assert made[0].max_len == fresh[0].max_len < 100 and fresh[1].max_len == 10**9  # a window of its own; the whole context
    assert made[1].max_len == made[1].k.shape[2] == 12  # the prompt and the new tokens
