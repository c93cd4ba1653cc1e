"""Named hook points: identity modules on every activation worth reading or changing.

As in TransformerLens, `model.get_submodule("blocks.2.attn.hook_v")` is a place to attach
`register_forward_hook`; a hook that returns a tensor replaces the activation. Interventions
(ablations, patching) are built on these, so the model code never branches on them.

A hook point with no hook costs one attribute test, not a module call: `__call__` goes through
nn.Module's machinery only when a hook is registered on it or globally, so the dozen hook points
of every block cost nothing in training and decoding until someone hooks them. The attention
matrices' points (hook_attn_scores, hook_pattern) are built only when hooked themselves
(CausalSelfAttention.attend_explicitly).
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as _module


def _global_hooks() -> bool:
    """Whether any hook is registered on every module (nn.modules.module.register_module_forward_hook)."""
    return bool(
        _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )


def _own_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks)


def hooked(model: nn.Module) -> bool:
    """Whether a hook is registered on any module of `model`, or on every module."""
    return _global_hooks() or any(_own_hooks(module) for module in model.modules())


class HookPoint(nn.Module):
    """Returns its input unchanged; exists to be hooked."""

    def __call__(self, x):
        if self._forward_hooks or self._forward_pre_hooks or self._backward_hooks or self._backward_pre_hooks or _global_hooks():
            return super().__call__(x)  # (has_own_hooks written out: this runs a dozen times per block and token)
        return x

    def has_own_hooks(self) -> bool:
        """Whether a hook is registered on this point itself (not one on every module, as
        torch's FLOP counter registers)."""
        return _own_hooks(self)

    def forward(self, x):
        return x
