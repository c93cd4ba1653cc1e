"""The backbone's pieces written from their definitions (explicit sums, no fused kernels), for the
whole-model naive references `slmlab check` compares models against (registry.NAIVE_MODEL_REFERENCES):

    LayerNorm  (x - mean(x)) / sqrt(var(x) + eps) * w + b      RMSNorm  x / sqrt(mean(x²) + eps) * w
    GELU MLP   W_2 gelu_tanh(W_1 x + b_1) + b_2,  gelu_tanh(u) = u/2 (1 + tanh(sqrt(2/π)(u + 0.044715 u³)))
    SwiGLU     W_down (silu(W_gate x) ⊙ W_up x),  silu(u) = u σ(u)
    linear head  h Wᵀ;  Student-t head  -(ν + D)/2 · log(1 + ||h − w_v||² / ν) per vocabulary row w_v
    positions  learned: wpe[t];  sinusoidal: PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(...)
               (angles in float64: a float64 model computes its table in float64 too);
               rotary: nothing added (the layer reference rotates q and k)

A norm or MLP of a plugin gives its own definition as a method, `naive(x)`, and a residual
conditioning as `naive(layer, x) -> (x, shift)`; each function returns None for a module it does
not know, and the reference using it then does not apply. A layer's
attention is the first registered layer reference (registry.NAIVE_REFERENCES) that applies to it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import NAIVE_REFERENCES
from .attention import FullCausal
from .block_local import BlockLocal
from .decoder import NoConditioning
from .heads import LinearHead, StudentTHead
from .layers import MLP, SwiGLU
from .positions import LearnedPositions, RotaryPositions, SinusoidalPositions


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)


def norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    if type(module) is nn.LayerNorm:
        centred = x - x.mean(-1, keepdim=True)
        y = centred / torch.sqrt((centred * centred).mean(-1, keepdim=True) + module.eps) * module.weight
        return y + module.bias if module.bias is not None else y
    if type(module) is nn.RMSNorm:
        eps = module.eps if module.eps is not None else torch.finfo(x.dtype).eps
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * module.weight
    return own_definition(module, x)


def mlp(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    if type(module) is MLP:
        u = linear(module.fc, x)
        return linear(module.proj, u / 2 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3))))
    if type(module) is SwiGLU:
        gate = linear(module.gate, x)
        return linear(module.down, gate * torch.sigmoid(gate) * linear(module.up, x))
    return own_definition(module, x)


def allowed_keys(pattern: nn.Module, T: int, device: torch.device | None = None) -> torch.Tensor | None:
    """(T, T) bool on `device`: query i may attend to key j, from the attention pattern's
    definition (None for a pattern written nowhere here):

        full causal   j <= i
        block-local   j <= i and block(j) >= block(i) - 1,  block(p) = p // B"""
    i, j = torch.arange(T, device=device)[:, None], torch.arange(T, device=device)[None, :]
    if isinstance(pattern, FullCausal):
        return j <= i
    if isinstance(pattern, BlockLocal):
        return (j <= i) & (j // pattern.block >= i // pattern.block - 1)
    return None


def own_definition(module: nn.Module, *inputs: torch.Tensor | int):
    """A module's `naive(...)`, its output written from its definition (None: it has none)."""
    naive = getattr(module, "naive", None)
    return naive(*inputs) if callable(naive) else None


def conditioning(module: nn.Module, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(x, shift of the sublayer inputs) before block `layer`: no change for the decoder's
    NoConditioning, else the conditioning's own `naive(layer, x)`."""
    if type(module) is NoConditioning:
        return x, None
    return own_definition(module, layer, x)


def head(module: nn.Module, h: torch.Tensor) -> torch.Tensor | None:
    """h (B, T, D) -> logits (B, T, V)."""
    if type(module) is LinearHead:
        return h @ module.weight.T
    if type(module) is StudentTHead:
        distance = ((h[..., None, :] - module.weight) ** 2).sum(-1)  # (B, T, V): every row's squared distance
        return -(module.nu + h.shape[-1]) / 2 * torch.log1p(distance / module.nu)
    return None


def position_embedding(
    scheme: nn.Module, T: int, d_model: int, dtype: torch.dtype, device: torch.device | None = None
) -> torch.Tensor | None:
    """(T, d_model) on `device`, added to the token embeddings at positions 0..T-1 (zeros for rotary)."""
    if type(scheme) is LearnedPositions:
        return scheme.wpe.weight[:T]
    if type(scheme) is SinusoidalPositions:
        table = torch.zeros(T, d_model, dtype=dtype, device=device)
        for i in range(0, d_model, 2):
            angle = torch.arange(T, dtype=torch.float64, device=device) / 10000.0 ** (i / d_model)
            table[:, i] = angle.sin().to(dtype)
            if i + 1 < d_model:
                table[:, i + 1] = angle.cos().to(dtype)
        return table
    if type(scheme) is RotaryPositions:
        return torch.zeros(T, d_model, dtype=dtype, device=device)
    return None


def embed(model: nn.Module, idx: torch.Tensor) -> torch.Tensor | None:
    """x_0 = wte[idx] + PE for a model with `wte` and `positions` (None: positions without a naive form)."""
    table = position_embedding(model.positions, idx.shape[1], model.cfg.d_model, model.wte.weight.dtype, idx.device)
    return None if table is None else model.wte.weight[idx] + table


def attention(attn: nn.Module, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
    """The layer's output by the first registered layer reference that applies to it."""
    for reference in NAIVE_REFERENCES.values():
        out = reference(attn, h, positions)
        if out is not None:
            return out
    return None
