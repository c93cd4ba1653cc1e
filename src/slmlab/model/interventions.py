"""Interventions: named, declared changes to a trained model's activations at evaluation time.

An intervention replaces the outputs of hook points (model/hooks.py) whose module name ends with
a given suffix (e.g. "hook_lambda" in every layer). Each is declared once, with what it changes,
in registry.INTERVENTIONS keyed by variant, so any variant (or plugin) adds its own in its
own file (SMAT's surgical ablations: slmlab/variants/smat.py):

    with intervene(model, INTERVENTIONS["smat"]["gate_one"]):
        loss = evaluate(model, ...)

`slmlab ablate RUN` evaluates every intervention that applies to a run and reports them in one
table against the unmodified model. Two kinds need no declaration, as TransformerLens users
zero-ablate a component: `--layers` adds `layer_ablations`, each layer's attention and MLP output
(its contribution to the residual stream) set to zero in turn, and `--heads` adds
`head_ablations`, each attention head's output z_h set to zero before the output projection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import INTERVENTIONS
from .attention import CausalSelfAttention

Replace = Callable[[torch.Tensor], torch.Tensor]


def constant(replace: Replace) -> Callable[[], Replace]:
    """A replacement without state, as the factory `Intervention.replacements` expects."""
    return lambda: replace


@dataclass(frozen=True)
class Intervention:
    """`replacements` maps a hook-point suffix to a factory of the function that computes the new
    output from the old; the factory runs at each application, so random replacements are
    reproducible (same seed every time). `owner` (a module class) limits the hook points to those
    inside modules of that class: two ideas may both name a hook point "hook_gate"."""

    name: str
    description: str
    replacements: dict[str, Callable[[], Replace]] = field(default_factory=dict)
    owner: type | None = None


def hook_points(model: nn.Module, suffix: str, owner: type | None = None) -> list[nn.Module]:
    """The modules whose name ends with `suffix` (inside an `owner` instance, when given)."""
    found = []
    for name, module in model.named_modules():
        if not (name == suffix or name.endswith("." + suffix)):
            continue
        parent = name[: -len(suffix)].rstrip(".")
        if owner is None or isinstance(model.get_submodule(parent), owner):
            found.append(module)
    return found


@contextlib.contextmanager
def intervene(model: nn.Module, intervention: Intervention):
    """Apply an intervention for the duration of the block; errors if a hook point is absent."""
    handles = []
    try:
        for suffix, factory in intervention.replacements.items():
            replace = factory()
            points = hook_points(model, suffix, intervention.owner)
            if not points:
                raise ConfigError(f"intervention '{intervention.name}': the model has no hook point '{suffix}'")
            handles += [p.register_forward_hook(lambda module, args, out, f=replace: f(out)) for p in points]
        yield
    finally:
        for handle in handles:
            handle.remove()


def applicable(model: nn.Module) -> list[Intervention]:
    """The registered interventions (registry.INTERVENTIONS: variant -> {name: Intervention})
    whose hook points all exist in this model."""
    return [
        intervention
        for group in INTERVENTIONS.values()
        for intervention in group.values()
        if all(hook_points(model, suffix, intervention.owner) for suffix in intervention.replacements)
    ]


# A layer's residual contributions, by the backbone's hook-point names (model/block.py).
COMPONENTS = {"hook_attn_out": "attention", "hook_mlp_out": "MLP"}


def layer_ablations(model: nn.Module) -> list[Intervention]:
    """One zero ablation per backbone component (a layer's attention or MLP output, the
    residual stream's x + attn(...) and x + mlp(...) then add 0), in module order. Each targets
    one module by its full name, so `intervene` hooks only that one (names of modules nested
    elsewhere could end the same: they are left out rather than ablated together)."""
    found = []
    for name, _ in model.named_modules():
        layer, _, leaf = name.rpartition(".")
        if leaf in COMPONENTS and len(hook_points(model, name)) == 1:
            found.append(
                Intervention(
                    f"{layer or 'model'} {COMPONENTS[leaf]} = 0",
                    f"{layer or 'the model'}'s {COMPONENTS[leaf]} output set to zero (its residual contribution removed)",
                    {name: constant(torch.zeros_like)},
                )
            )
    return found


def _zero_head(head: int) -> Replace:
    def replace(z: torch.Tensor) -> torch.Tensor:  # (B, H, T, D): one row of heads per token
        z = z.clone()
        z[:, head] = 0
        return z

    return replace


def head_ablations(model: nn.Module) -> list[Intervention]:
    """One zero ablation per attention head, in module order: head h's output z_h (B, T, D) set to
    zero at its layer's hook_z, so attn(x) = W_o concat(z_1..z_H) + b loses W_o's h-th column
    block times z_h, the head's whole contribution. Any architecture built from the backbone's
    attention layer has them (the decoder's blocks, the TapeTransformer's stacks)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, CausalSelfAttention) and len(hook_points(model, f"{name}.hook_z")) == 1:
            found += [
                Intervention(
                    f"{name} head {head} = 0",
                    f"head {head} of {name} set to zero before its output projection",
                    {f"{name}.hook_z": constant(_zero_head(head))},
                )
                for head in range(module.n_head)
            ]
    return found
