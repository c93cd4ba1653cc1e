"""Reading and changing a model's activations the TransformerLens way: one forward pass, keeping
what its hook points (model/hooks.py) saw, or with hooks on them for that pass only.

    logits, cache = run_with_cache(model, idx)                                   # every hook point
    logits, cache = run_with_cache(model, idx, names=["blocks.0.hook_attn_out"])  # just these
    logits, cache = run_with_cache(model, idx, names="blocks.0.hook_attn_out")    # just this one
    logits, cache = run_with_cache(model, idx, names=lambda name: name.endswith("hook_z"))
    logits = run_with_hooks(model, idx, [("blocks.0.attn.hook_z", lambda z, name: z * 0)])  # hooks for one pass

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
    name, as TransformerLens's names_filter; None: all, the attention matrices hook_attn_scores and
    hook_pattern included, two (B, H, T, T) per layer). A name the model does not have is an
    error that lists the close ones."""
    points = hook_points_named(model, names)
    cache = ActivationCache(model)

    def keep(name: str) -> Callable:
        return lambda module, args, output: cache.__setitem__(name, output.detach())

    with torch.no_grad():
        logits = _forward_hooked(model, idx, [(module, keep(name)) for name, module in points.items()])
    return logits, cache


class ActivationCache(dict):
    """{hook point name: activation}, a dict whose missing key is a KeyError that says why: a hook
    point `names` left out, one the pass did not reach (RoPE has no hook_pos_embed), a module
    without hook points (a norm: TransformerLens's `ln_final.hook_normalized` reads model.norm_f),
    or no such hook point, with the close names."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._points = list(hook_points_named(model, None))
        self._modules = {name for name, _ in model.named_modules()}

    def __missing__(self, name: str):
        if name in self._points:
            raise KeyError(
                f"{name} was not kept: the names given to run_with_cache left it out, or this forward pass never reached it "
                "(hook_pos_embed where positions add no embedding)"
            )
        raise KeyError(no_hook_point(str(name), self._points, self._modules))


def run_with_hooks(
    model: nn.Module, idx: torch.Tensor, fwd_hooks: Iterable[tuple[str | Callable[[str], bool], Callable]]
) -> torch.Tensor:
    """Logits (B, T, V) of one forward pass in eval mode with each (name, hook) of `fwd_hooks` on
    the hook points it names (a name, or a test on the name, as TransformerLens's fwd_hooks):
    hook(activation, name) returns the activation to use instead, or None to keep it. Autograd
    stays on (attribution reads gradients); the hooks are gone after the pass, however it ends."""
    hooked = []
    for names, hook in fwd_hooks:
        if not callable(hook):
            raise ConfigError(f"the hook for {names!r} is {type(hook).__name__}, not a function of (activation, name)")
        for name, module in hook_points_named(model, names).items():
            hooked.append((module, lambda module, args, output, hook=hook, name=name: _replacement(hook, output, name)))
    return _forward_hooked(model, idx, hooked)


def _replacement(hook: Callable, activation: torch.Tensor, name: str) -> torch.Tensor | None:
    """What `hook(activation, name)` gives to use instead: None, or a tensor of the activation's
    shape, dtype and device; anything else is a ConfigError naming the hook point (a number was
    added to the stream by broadcasting, a narrower tensor failed deep in the next layer)."""
    out = hook(activation, name)
    if out is None:
        return None
    if not isinstance(out, torch.Tensor):
        raise ConfigError(
            f"the hook on {name} returned {type(out).__name__}: return a tensor like the activation, or None to keep it"
        )
    if (out.shape, out.dtype, out.device) != (activation.shape, activation.dtype, activation.device):
        raise ConfigError(
            f"the hook on {name} returned a {out.dtype} tensor of shape {tuple(out.shape)} on {out.device}, where the activation "
            f"is {activation.dtype} {tuple(activation.shape)} on {activation.device}: return one like it, or None to keep it"
        )
    return out


def hook_points_named(model: nn.Module, names: Iterable[str] | Callable[[str], bool] | str | None) -> dict[str, nn.Module]:
    """{name: hook point} of `model` that `names` chooses: a name, a list of names, a test on the
    name, or None (all). A name the model does not have is a ConfigError listing the close ones."""
    points = {name: module for name, module in model.named_modules() if isinstance(module, HookPoint)}
    if names is None:
        return points
    if callable(names):
        return {name: module for name, module in points.items() if names(name)}
    chosen = [names] if isinstance(names, str) else list(names) if isinstance(names, Iterable) else None
    if chosen is None or not all(isinstance(name, str) for name in chosen):  # a string is one name, not its letters
        raise ConfigError(f"names must be a hook point's name, a list of names or a test on the name; got {names!r:.60}")
    for name in chosen:
        if name not in points:
            raise ConfigError(no_hook_point(name, list(points), {module_name for module_name, _ in model.named_modules()}))
    return {name: points[name] for name in chosen}


def no_hook_point(name: str, points: list[str], modules: set[str]) -> str:
    """Why the model has no hook point `name` (given its hook points' and modules' names): a module
    without hook points (a norm: TransformerLens's ln_final is model.norm_f), or a name not there,
    with the close ones."""
    typo = difflib.get_close_matches(name, points, n=1, cutoff=0.85)
    owner = name.rpartition(".")[0]
    owner = "norm_f" if owner == "ln_final" else owner  # TransformerLens's name for the final norm
    if owner and owner in modules and not typo:
        return f"{owner} has no hook point {name!r}: a forward hook on model.get_submodule({owner!r}) reads its output"
    close = difflib.get_close_matches(name, points, n=3) or sorted(points)[:3]
    return f"the model has no hook point {name!r} (close: {', '.join(close)})"


def _forward_hooked(model: nn.Module, idx: torch.Tensor, hooks: list[tuple[nn.Module, Callable]]) -> torch.Tensor:
    """The logits of model(idx) in eval mode with each (module, forward hook) registered for it."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with eval_mode(model):
            logits, _ = model(idx)
    finally:
        for handle in handles:
            handle.remove()
    return logits
