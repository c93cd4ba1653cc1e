"""Auxiliary losses: terms a module adds to the objective the model trains on, never to the loss
it is scored by (an MoE router's load-balancing loss, a router z-loss, a regulariser).

Any module of any architecture or plugin that defines `auxiliary_loss() -> Tensor | None` gives
the term of its latest forward (a 0-dim tensor in that forward's graph; None: no term this time).
Whatever trains the model backpropagates

    objective = loss + Σ_modules auxiliary_loss()

(the training step, each of `grad_accum` micro-batches; `slmlab check`'s gradient, determinism and
overfitting properties; `diagnose`), and the trainer logs the sum as `aux_loss`. Under DDP the
terms are outputs of the wrapped forward (`WithAuxiliary`), where DDP's search for the parameters
a step left unused sees what they reach. Validation loss, perplexity and bits per byte stay the
language-modelling loss alone, so runs with and without an auxiliary term compare.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


def auxiliary_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of `model` that give an auxiliary loss."""
    return [m for m in model.modules() if callable(getattr(m, "auxiliary_loss", None))]


def auxiliary_loss(modules: list[nn.Module]) -> torch.Tensor | None:
    """The sum of the terms `modules` (from `auxiliary_modules`) gave in their latest forward, or
    None when none gave one. A term that is not a 0-dim floating tensor is a one-line error: a
    vector would be summed in silence, a per-token loss counted at its batch's size."""
    terms = []
    for module in modules:
        term = module.auxiliary_loss()
        if term is None:
            continue
        if not (isinstance(term, torch.Tensor) and term.dim() == 0 and term.is_floating_point()):
            got = f"a tensor of shape {tuple(term.shape)} ({term.dtype})" if isinstance(term, torch.Tensor) else repr(term)
            raise ConfigError(
                f"{type(module).__name__}.auxiliary_loss() gave {got}: give a 0-dim floating tensor of the latest "
                "forward's graph (a mean over its tokens), or None"
            )
        terms.append(term.float())
    return torch.stack(terms).sum() if terms else None


def objective(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """What training backpropagates after a forward of `model` that returned `loss`: the loss plus
    the auxiliary terms of that forward (the training step, which steps many times, finds the
    modules once and calls `auxiliary_loss` itself)."""
    extra = auxiliary_loss(auxiliary_modules(model))
    return loss if extra is None else loss + extra


class WithAuxiliary(nn.Module):
    """`model` whose training forward with targets returns (logits, loss, auxiliary sum or None):
    the module DDP wraps, so that the terms are among the outputs it searches from. Otherwise
    (eval mode, no targets, decoding) it returns what the model returns."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.auxiliary = auxiliary_modules(model)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, **kwargs):
        out = self.model(idx, targets, **kwargs)
        if targets is None or not self.model.training:
            return out
        return (*out, auxiliary_loss(self.auxiliary))
