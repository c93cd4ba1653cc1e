"""Interventions: named, declared changes to a trained model's activations at evaluation time.

An intervention replaces the outputs of hook points (model/hooks.py) whose module name ends with
a given suffix (e.g. "hook_lambda" in every layer). Each is declared once, with what it changes,
in registry.INTERVENTIONS keyed by variant, so any variant (or plugin) adds its own in its
own file (SMAT's surgical ablations: slmlab/variants/smat.py):

    with intervene(model, INTERVENTIONS["smat"]["gate_one"]):
        loss = evaluate(model, ...)

`slmlab ablate RUN` evaluates every intervention that applies to a run and reports them in one
table against the unmodified model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import INTERVENTIONS

Replace = Callable[[torch.Tensor], torch.Tensor]


def constant(replace: Replace) -> Callable[[], Replace]:
    """A replacement without state, as the factory `Intervention.replacements` expects."""
    return lambda: replace


@dataclass(frozen=True)
class Intervention:
    """`replacements` maps a hook-point suffix to a factory of the function that computes the new
    output from the old; the factory runs at each application, so random replacements are
    reproducible (same seed every time)."""

    name: str
    description: str
    replacements: dict[str, Callable[[], Replace]] = field(default_factory=dict)


@contextlib.contextmanager
def intervene(model: nn.Module, intervention: Intervention):
    """Apply an intervention for the duration of the block; errors if a hook point is absent."""
    handles = []
    try:
        for suffix, factory in intervention.replacements.items():
            replace = factory()
            points = [m for n, m in model.named_modules() if n.endswith(suffix)]
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
    names = [n for n, _ in model.named_modules()]
    found = []
    for group in INTERVENTIONS.values():
        for intervention in group.values():
            if all(any(n.endswith(s) for n in names) for s in intervention.replacements):
                found.append(intervention)
    return found
