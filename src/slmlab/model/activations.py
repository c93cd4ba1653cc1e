"""Reading a model's activations the TransformerLens way: one forward pass, keeping what its hook
points (model/hooks.py) saw.

    logits, cache = run_with_cache(model, idx)                                   # every hook point
    logits, cache = run_with_cache(model, idx, names=["blocks.0.hook_attn_out"])  # just these
    logits, cache = run_with_cache(model, idx, names="blocks.0.hook_attn_out")    # just this one
    logits, cache = run_with_cache(model, idx, names=lambda name: name.endswith("hook_z"))

`cache` maps each hook point's module name to its output, e.g. "blocks.1.hook_resid_pre"
(B, T, d_model), "blocks.0.attn.hook_q" (B, H, T, D). In the backbone the residual stream obeys
resid_pre[l + 1] = resid_pre[l] + attn_out[l] + mlp_out[l] (without conditioning).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..errors import ConfigError
from .hooks import HookPoint
from .modes import eval_mode


def run_with_cache(
    model: nn.Module, idx: torch.Tensor, names: Iterable[str] | Callable[[str], bool] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(logits (B, T, V), {hook point name: its output}) for token ids idx (B, T), in eval mode and
    without autograd; `names`: the hook points to keep (a name, a list of names, or a test on the
    name, as TransformerLens's names_filter; None: all). A name the model does not have is an
    error that lists the close ones."""
    points = {name: module for name, module in model.named_modules() if isinstance(module, HookPoint)}
    if names is None:
        chosen = list(points)
    elif callable(names):
        chosen = [name for name in points if names(name)]
    else:
        chosen = [names] if isinstance(names, str) else list(names) if isinstance(names, Iterable) else None
        if chosen is None or not all(isinstance(name, str) for name in chosen):  # a string is one name, not its letters
            raise ConfigError(f"names must be a hook point's name, a list of names or a test on the name; got {names!r:.60}")
        for name in chosen:
            if name not in points:
                close = difflib.get_close_matches(name, points, n=3) or sorted(points)[:3]
                raise ConfigError(f"the model has no hook point {name!r} (close: {', '.join(close)})")
    cache: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable:
        return lambda module, args, output: cache.__setitem__(name, output.detach())

    handles = [points[name].register_forward_hook(keep(name)) for name in chosen]
    try:
        with torch.no_grad(), eval_mode(model):
            logits, _ = model(idx)
    finally:
        for handle in handles:
            handle.remove()
    return logits, cache
