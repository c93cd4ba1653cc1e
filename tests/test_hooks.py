"""Hook points are free until hooked: no module call without a hook, and every kind of hook
(forward, forward pre, global) still sees and may replace the activation."""

from __future__ import annotations

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
    assert calls.count("HookPoint") == 1 + 2 * (3 + 4)  # embed, and per block: 3 block + 4 attention points
    assert torch.equal(model(idx)[0], clean)
