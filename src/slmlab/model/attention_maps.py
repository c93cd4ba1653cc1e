"""Attention maps on demand: the probabilities every attention module applied, for one input.

No architecture builds attention matrices in training (fused SDPA). Here a forward hook on every
attention pattern (any model: backbone, SMAT, block-local, SMT, Tape) receives the final queries
and keys (after RoPE and score extensions such as SMAT's extra dimensions) and the scale, and
rebuilds

    P = softmax(q kᵀ · scale, over the keys the pattern lets each query see)   (heads, T, T)

(or softmax of the pattern's own `scores`, for one that adds a bias), which is exactly the
attention the model applied: P v must equal the pattern's output, else the capture is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .attention import CausalSelfAttention
from .explicit_attention import attention_scores, check_applied
from .modes import eval_mode
from .protocol import attention_modules


@dataclass
class AttentionMap:
    name: str  # the attention module's name, e.g. "blocks.2.attn"
    probs: torch.Tensor  # (heads, Tq, Tk), rows sum to 1
    values: torch.Tensor  # (heads, Tk, D) as the pattern received them
    output: torch.Tensor  # (heads, Tq, D) what the pattern returned


def require_attention(model: nn.Module, what: str) -> list[tuple[str, CausalSelfAttention]]:
    """The model's attention modules; none (an architecture without CausalSelfAttention layers)
    is a ConfigError saying that `what` needs them."""
    modules = attention_modules(model)
    if not modules:
        arch = getattr(getattr(model, "cfg", None), "arch", type(model).__name__)
        raise ConfigError(
            f"{what} needs attention maps, and model.arch = {arch!r} has no attention layers "
            "(CausalSelfAttention) to take them from"
        )
    return modules


@torch.no_grad()
def capture_attention(model: nn.Module, idx: torch.Tensor) -> tuple[list[AttentionMap], torch.Tensor]:
    """Run model on idx (1, T) in eval mode -> (every attention module's probabilities, the logits)."""
    maps, handles = [], []
    for name, module in require_attention(model, "capture_attention"):

        def hook(pattern, args, output, name=name):
            q, k, v, scale, q_start = args
            probs = attention_scores(pattern, q[:1].float(), k[:1].float(), scale, q_start)[0].softmax(-1)
            amap = AttentionMap(name, probs, v[0].float(), output[0].float())
            check_applied(amap.probs, amap.values, amap.output, pattern, name)
            maps.append(amap)

        handles.append(module.pattern.register_forward_hook(hook))
    try:
        with eval_mode(model):
            logits, _ = model(idx)
    finally:
        for handle in handles:
            handle.remove()
    return maps, logits


def token_scores(maps: list[AttentionMap]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token, over every module and head: the mean attention it receives from the queries that
    can see it, and the share of its own attention it gives to other tokens (1 − P_tt)."""
    probs = torch.stack([m.probs for m in maps if m.probs.shape[-1] == m.probs.shape[-2]])  # (M, H, T, T)
    seen_by = (probs > 0).float().sum(dim=(0, 1, 2)).clamp_min(1)
    received = probs.sum(dim=(0, 1, 2)) / seen_by
    given = 1 - probs.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 1))
    return received, given
