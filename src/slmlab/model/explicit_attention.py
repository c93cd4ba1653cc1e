"""Attention written out: a pattern's scores (B, H, Tq, Tk) and the check that softmax of them is
the attention the pattern applies.

The patterns run fused kernels (SDPA, FlexAttention) that never build a T x T matrix. Attention
maps (attention_maps.py) and the hook points hook_attn_scores / hook_pattern rebuild

    scores = q kᵀ · scale over the keys the pattern lets each query see (-inf elsewhere),
             or the pattern's own `scores(q, k, scale, q_start)` where it adds a bias
    P      = softmax(scores)

and compare P v with the pattern's output: a pattern whose softmax holds a term `visible()` does
not show would otherwise be drawn, or patched, as attention it never applied.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


def attention_scores(pattern: nn.Module, q: torch.Tensor, k: torch.Tensor, scale: float, q_start: int) -> torch.Tensor:
    """The logits a pattern softmaxes, (B, H, Tq, Tk), -inf where a query sees no key: the
    pattern's own `scores(q, k, scale, q_start)` where it has one (a pattern that adds a bias,
    ALiBi's say), else q kᵀ · scale over the keys `visible(Tq, Tk, q_start, device)` allows."""
    if hasattr(pattern, "scores"):
        return pattern.scores(q, k, scale, q_start)
    visible = pattern.visible(q.shape[2], k.shape[2], q_start, q.device)
    return ((q @ k.transpose(-2, -1)) * scale).masked_fill(~visible, float("-inf"))


def check_applied(probs: torch.Tensor, values: torch.Tensor, output: torch.Tensor, pattern: nn.Module, where: str) -> None:
    """Refuse probabilities (..., Tq, Tk) that are not the attention `pattern` applied: P v (values
    (..., Tk, D_v), only the output's width read) must give its `output` (..., Tq, D) to 1e-3 of the
    output's size (16 rounding steps of a coarser type: bf16's kernels, or autocast's, round at
    ~4e-3), else the pattern's softmax holds a term the scores left out."""
    width, tolerance = output.shape[-1], max(1e-3, 16 * torch.finfo(output.dtype).eps)
    error = (probs.float() @ values[..., :width].float() - output.float()).abs().max().item()
    if not error <= tolerance * output.abs().max().item() + 1e-5:
        raise ConfigError(
            f"{where}: the attention pattern {type(pattern).__name__} applies more than softmax(q·k·scale) over the keys "
            f"its visible() allows (P v misses its output by {error:.2g}); give it a method scores(q, k, scale, q_start) "
            "returning its (B, H, Tq, Tk) logits, -inf where unseen, for attention maps and hook_pattern"
        )
