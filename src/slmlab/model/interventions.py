"""Interventions: named, declared changes to a trained model's activations at evaluation time.

An intervention replaces the outputs of hook points (model/hooks.py) whose module name ends with
a given suffix (e.g. "hook_lambda" in every layer). Each is declared once, with what it changes,
in a registry keyed by variant, so any variant can add its own:

    with intervene(model, INTERVENTIONS["smat"]["gate_one"]):
        loss = evaluate(model, ...)

`slmlab ablate RUN` evaluates every intervention that applies to a run and reports them in one
table against the unmodified model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

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
                raise ValueError(f"intervention '{intervention.name}': the model has no hook point '{suffix}'")
            handles += [p.register_forward_hook(lambda module, args, out, f=replace: f(out)) for p in points]
        yield
    finally:
        for handle in handles:
            handle.remove()


def _random_same_norm(seed: int = 0) -> Replace:
    """Replace ŝ (B, T, s) by Gaussian r scaled so that ||r r^T||_F = ||ŝ ŝ^T||_F per sequence.

    ||A A^T||_F = ||A^T A||_F, so the (s, s) Gram matrices give the norms without a T x T tensor."""
    generator = torch.Generator().manual_seed(seed)

    def replace(s_hat: torch.Tensor) -> torch.Tensor:
        r = torch.randn(s_hat.shape, generator=generator, dtype=torch.float32).to(s_hat)
        target = torch.linalg.matrix_norm(s_hat.transpose(1, 2) @ s_hat)
        current = torch.linalg.matrix_norm(r.transpose(1, 2) @ r)
        return r * (target / current).sqrt()[:, None, None]

    return replace


def _mean_over_tokens(gate: torch.Tensor) -> torch.Tensor:
    return gate.mean(dim=(0, 1), keepdim=True).expand_as(gate)


INTERVENTIONS: dict[str, dict[str, Intervention]] = {
    "smat": {
        i.name: i for i in (
            Intervention("lambda_zero", "λ = 0: no similarity bias in attention; S still drives the gate's centrality c",
                         {"hook_lambda": constant(torch.zeros_like)}),
            Intervention("s_removed", "S removed entirely: no bias (λ = 0) and c = 0 in the gate",
                         {"hook_lambda": constant(torch.zeros_like), "hook_c": constant(torch.zeros_like)}),
            Intervention("random_s", "S replaced by a random S of the same Frobenius norm (bias and c)",
                         {"hook_s": _random_same_norm}),
            Intervention("gate_mean", "G replaced by its mean over all tokens of the batch",
                         {"hook_gate": constant(_mean_over_tokens)}),
            Intervention("gate_one", "G forced to 1.0 (as if use_G were off)", {"hook_gate": constant(torch.ones_like)}),
        )
    },
}


def applicable(model: nn.Module) -> list[Intervention]:
    """Interventions whose hook points all exist in this model."""
    names = [n for n, _ in model.named_modules()]
    found = []
    for group in INTERVENTIONS.values():
        for intervention in group.values():
            if all(any(n.endswith(s) for n in names) for s in intervention.replacements):
                found.append(intervention)
    return found


def route_shares(delta_lambda_zero: float, delta_s_removed: float) -> tuple[float, float]:
    """Share of S's effect through the attention bias vs through the gate (seed 003's split):
    bias = Δ(λ=0) / Δ(S removed), gate = 1 - bias. NaN when removing S changes nothing."""
    if not math.isfinite(delta_s_removed) or abs(delta_s_removed) < 1e-12:
        return math.nan, math.nan
    bias = delta_lambda_zero / delta_s_removed
    return bias, 1.0 - bias
