"""Named hook points: identity modules on every activation worth reading or changing.

As in TransformerLens, `model.get_submodule("blocks.2.attn.hook_v")` is a place to attach
`register_forward_hook`; a hook that returns a tensor replaces the activation. Interventions
(ablations, patching) are built on these, so the model code never branches on them.
"""

from __future__ import annotations

from torch import nn


class HookPoint(nn.Module):
    """Returns its input unchanged; exists to be hooked."""

    def forward(self, x):
        return x
