"""RoPE: relative positions, linear scaling as position interpolation, cache consistency."""

from __future__ import annotations

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


def test_bad_rope_settings_are_rejected():
    from slmlab.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="model.rope_fraction must be in"):
        config_from_dict({"model": {"pos": "rope", "rope_fraction": 0.0}})
    with pytest.raises(ConfigError, match="model.rope_scale must be > 0"):
        config_from_dict({"model": {"pos": "rope", "rope_scale": -1.0}})
