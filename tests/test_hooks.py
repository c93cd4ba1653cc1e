"""Hook points are free until hooked: no module call without a hook, and every kind of hook
(forward, forward pre, global) still sees and may replace the activation."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from slmlab.config import ModelConfig
from slmlab.model import build_model
from slmlab.model.hooks import HookPoint


def test_an_unhooked_point_returns_its_input_without_a_module_call(monkeypatch):
    point, x = HookPoint(), torch.randn(3)
    monkeypatch.setattr(nn.Module, "_call_impl", lambda *a, **k: (_ for _ in ()).throw(AssertionError("module call")))
    assert point(x) is x


def test_forward_pre_and_global_hooks_still_fire_and_replace():
    model = build_model(ModelConfig(n_layer=2, n_head=2, d_model=16, block_size=8, vocab_size=11)).eval()
    idx = torch.randint(0, 11, (1, 8))
    clean = model(idx)[0]
    seen = []
    handle = model.blocks[1].attn.hook_v.register_forward_hook(
        lambda m, args, out: seen.append(out.shape) or torch.zeros_like(out)
    )
    zeroed = model(idx)[0]
    handle.remove()
    assert seen == [torch.Size([1, 2, 8, 8])] and not torch.allclose(zeroed, clean)
    pre = model.hook_embed.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    assert not torch.allclose(model(idx)[0], clean)
    pre.remove()
    calls = []
    handle = nn.modules.module.register_module_forward_hook(lambda m, args, out: calls.append(type(m).__name__))
    try:
        model(idx)
    finally:
        handle.remove()
    # token and position embeddings; per block: 5 residual, 4 attention (q, k, v, z), 2 MLP
    assert calls.count("HookPoint") == 2 + 2 * (5 + 4 + 2)
    assert torch.equal(model(idx)[0], clean)


def test_run_with_cache_keeps_every_hook_point_and_the_residual_stream_adds_up():
    """run_with_cache (TransformerLens's name): the logits of a plain forward, each hook point's
    output by module name, and the backbone's residual identity
    resid_pre[l + 1] = resid_pre[l] + attn_out[l] + mlp_out[l] checked on what it kept."""
    import pytest

    from slmlab.config import ConfigError
    from slmlab.model import run_with_cache

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=50, n_layer=2, n_head=2, d_model=16, block_size=16, dropout=0.1))
    idx = torch.randint(0, 50, (2, 7))
    logits, cache = run_with_cache(model, idx)
    assert model.training and not any(m._forward_hooks for m in model.modules())  # mode and hooks restored
    model.eval()
    torch.testing.assert_close(logits, model(idx)[0])
    assert {"hook_embed", "blocks.1.hook_resid_pre", "blocks.0.attn.hook_q", "blocks.1.hook_mlp_out"} <= set(cache)
    assert cache["blocks.0.attn.hook_q"].shape == (2, 2, 7, 8) and not cache["hook_embed"].requires_grad
    torch.testing.assert_close(
        cache["blocks.1.hook_resid_pre"],
        cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"] + cache["blocks.0.hook_mlp_out"],
    )
    _, some = run_with_cache(model, idx, names=lambda name: name.endswith("hook_attn_out"))
    assert sorted(some) == ["blocks.0.hook_attn_out", "blocks.1.hook_attn_out"]
    _, one = run_with_cache(model, idx, names=["blocks.1.hook_attn_out"])
    torch.testing.assert_close(one["blocks.1.hook_attn_out"], cache["blocks.1.hook_attn_out"])
    _, named = run_with_cache(model, idx, names="blocks.1.hook_attn_out")  # was read letter by letter: "no hook point 'b'"
    assert list(named) == ["blocks.1.hook_attn_out"]
    with pytest.raises(ConfigError, match="no hook point 'blocks.1.hook_atn_out' \\(close: blocks.1.hook_attn_out"):
        run_with_cache(model, idx, names=["blocks.1.hook_atn_out"])
    for names in (5, [5]):  # TypeError: 'int' object is not iterable
        with pytest.raises(ConfigError, match="names must be a hook point's name, a list of names or a test on the name"):
            run_with_cache(model, idx, names=names)


def test_run_with_hooks_changes_one_pass_as_a_hand_registered_hook_does():
    """run_with_hooks (TransformerLens's fwd_hooks): a hook returning a tensor replaces the
    activation for that pass only, one returning None reads it, a test on the name hooks every
    point it accepts; the same logits as a forward hook registered by hand; gradients flow."""
    import pytest

    from slmlab.config import ConfigError
    from slmlab.model import run_with_hooks

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=50, n_layer=2, n_head=2, d_model=16, block_size=16))
    idx = torch.randint(0, 50, (2, 7))
    model.eval()
    handle = model.get_submodule("blocks.1.hook_attn_out").register_forward_hook(lambda m, a, out: out * 0)
    by_hand = model(idx)[0]
    handle.remove()
    plain = model(idx)[0]
    seen = []
    logits = run_with_hooks(
        model,
        idx,
        [
            ("blocks.1.hook_attn_out", lambda out, name: out * 0),
            (lambda n: n.endswith("hook_q"), lambda q, name: seen.append(name)),
        ],
    )
    torch.testing.assert_close(logits, by_hand)
    assert seen == ["blocks.0.attn.hook_q", "blocks.1.attn.hook_q"] and not torch.allclose(logits, plain)
    torch.testing.assert_close(model(idx)[0], plain)  # gone after the pass
    assert not any(m._forward_hooks for m in model.modules()) and logits.requires_grad
    with pytest.raises(ConfigError, match="no hook point 'blocks.9.hook_attn_out'"):
        run_with_hooks(model, idx, [("blocks.9.hook_attn_out", lambda out, name: out)])
    with pytest.raises(ConfigError, match="is float, not a function of \\(activation, name\\)"):
        run_with_hooks(model, idx, [("blocks.1.hook_attn_out", 0.0)])


def test_a_hook_returning_what_is_not_an_activation_is_one_line():
    """A number returned was added to the residual stream by broadcasting, in silence; a narrower
    tensor failed deep in the next layer."""
    import pytest

    from slmlab.config import ConfigError
    from slmlab.model import run_with_hooks

    model = build_model(ModelConfig(vocab_size=50, n_layer=1, n_head=2, d_model=16, block_size=16))
    idx = torch.randint(0, 50, (1, 5))
    for hook, says in [
        (lambda out, name: 3, "returned int: return a tensor like the activation, or None to keep it"),
        (lambda out, name: out[..., :2], "of shape (1, 5, 2) on cpu, where the activation is torch.float32 (1, 5, 16)"),
        (lambda out, name: out.double(), "returned a torch.float64 tensor"),
    ]:
        with pytest.raises(ConfigError, match=r"the hook on blocks\.0\.hook_attn_out .*" + re.escape(says)):
            run_with_hooks(model, idx, [("blocks.0.hook_attn_out", hook)])
    assert run_with_hooks(model, idx, [("blocks.0.hook_attn_out", lambda out, name: None)]).shape == (1, 5, 50)


@pytest.mark.parametrize("arch", ["decoder", "tape"])
@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
def test_token_and_position_embeddings_are_two_hook_points_as_in_transformer_lens(arch, pos):
    """hook_embed is wte[idx] alone and hook_pos_embed the position embedding (B, T, d), whose sum
    is the first block's residual input (hook_embed held both, where a TransformerLens user reads
    the token embeddings); RoPE adds none, so it has no hook_pos_embed in the cache; zeroing it is
    the model with its position table zeroed."""
    from slmlab.model import naive, run_with_cache, run_with_hooks

    torch.manual_seed(0)
    extra = {"tape": {"coda_layers": 1, "critic_layers": 1}} if arch == "tape" else {}
    model = build_model(ModelConfig(arch=arch, pos=pos, vocab_size=30, n_layer=2, n_head=2, d_model=16, block_size=16, **extra))
    model.eval()
    idx = torch.randint(0, 30, (2, 7))
    _, cache = run_with_cache(model, idx)
    torch.testing.assert_close(cache["hook_embed"], model.wte.weight[idx])
    table = naive.position_embedding(model.positions, 7, 16, torch.float32)
    if pos == "rope":
        assert "hook_pos_embed" not in cache
    else:
        torch.testing.assert_close(cache["hook_pos_embed"], table.expand(2, 7, 16))
    if arch == "decoder":
        torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], model.wte.weight[idx] + table)
    if pos == "learned":
        zeroed = run_with_hooks(model, idx, [("hook_pos_embed", lambda out, name: torch.zeros_like(out))])
        with torch.no_grad():
            model.positions.wpe.weight.zero_()
        torch.testing.assert_close(zeroed, model(idx)[0])


def test_a_name_missing_from_the_cache_says_why():
    """The cache was a plain dict: KeyError 'ln_final.hook_normalized' said nothing of TransformerLens's
    final norm being model.norm_f, of a point the names filter left out, or of the close names."""
    from slmlab.model import run_with_cache

    model = build_model(ModelConfig(vocab_size=50, n_layer=1, n_head=2, d_model=16, block_size=16, pos="rope")).eval()
    _, cache = run_with_cache(model, torch.randint(0, 50, (1, 5)), names=lambda name: "resid" in name)
    assert isinstance(cache, dict) and sorted(cache) == [
        "blocks.0.hook_resid_mid",
        "blocks.0.hook_resid_post",
        "blocks.0.hook_resid_pre",
    ]
    for name, says in [
        ("blocks.0.hook_attn_out", "blocks.0.hook_attn_out was not kept: the names given to run_with_cache left it out"),
        ("hook_pos_embed", "or this forward pass never reached it"),  # RoPE adds no position embedding
        (
            "ln_final.hook_normalized",
            "norm_f has no hook point 'ln_final.hook_normalized': a forward hook on model.get_submodule",
        ),
        ("blocks.0.ln1.hook_scale", "blocks.0.ln1 has no hook point"),
        ("blocks.0.hook_resid_pr", "the model has no hook point 'blocks.0.hook_resid_pr' (close: blocks.0.hook_resid_pre"),
    ]:
        with pytest.raises(KeyError, match=re.escape(says)):
            cache[name]
    assert cache.get("blocks.0.hook_attn_out") is None and "blocks.0.hook_attn_out" not in cache
    from slmlab.config import ConfigError
    from slmlab.model import run_with_hooks

    with pytest.raises(ConfigError, match=re.escape("norm_f has no hook point 'ln_final.hook_normalized'")):
        run_with_hooks(model, torch.randint(0, 50, (1, 5)), [("ln_final.hook_normalized", lambda out, name: out)])
