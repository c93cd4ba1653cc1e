"""`slmlab check`'s naive references for the built-in attention layer and the whole decoder.

The layer: no extension, a full or block-local pattern, under any built-in position scheme.
Written with explicit (T, T) matrices, and RoPE applied pair of dimensions by pair, so that the
fast path (SDPA, the windowed kernel, the rotation by halves) is held to the definitions rather
than to itself:

    q, k, v = h W_qkv (split into H heads of width D)
    RoPE:     (x_d, x_{d+r/2}) -> (x_d cos a - x_{d+r/2} sin a, x_d sin a + x_{d+r/2} cos a),
              a = (p / rope_scale) rope_theta^(-2d / r), for d < r/2 (r the rotated width)
    allowed:  j <= i, and for block-local also block(j) >= block(i) - 1, block(p) = p // B
    out     = W_o concat_h(softmax(q k^T / sqrt(D), -inf where not allowed) v)

The angles are taken in float64 for float64 inputs (float32 otherwise), as the model's tables are
(positions.angle_dtype), so that a float64 comparison is exact.
"""

from __future__ import annotations

import math

import torch

from ..model import naive
from ..model.attention import CausalSelfAttention
from ..model.block import Block
from ..model.decoder import Decoder
from ..model.positions import LearnedPositions, RotaryPositions, SinusoidalPositions, angle_dtype
from ..registry import NAIVE_MODEL_REFERENCES, NAIVE_REFERENCES


def rotate_pairs(x: torch.Tensor, positions: torch.Tensor, rope: RotaryPositions) -> torch.Tensor:
    """x (B, H, T, D) at (T,) positions, rotated one pair of dimensions (d, d + r/2) at a time."""
    half, precision = rope.rotary_dim // 2, angle_dtype(x.dtype)
    out = x.clone()
    for d in range(half):
        angle = positions.to(precision) / rope.scale * rope.theta ** (-d / half)
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        a, b = x[..., d], x[..., d + half]
        out[..., d] = a * cos - b * sin
        out[..., d + half] = a * sin + b * cos
    return out


def plain_attention(attn, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
    """The layer's output for h (B, T, d_model) at (T,) positions, or None where it is not a
    built-in layer without extensions."""
    if type(attn) is not CausalSelfAttention or len(attn.extensions):
        return None
    scheme = attn._positions[0]
    allowed = naive.allowed_keys(attn.pattern, h.shape[1], h.device)
    if allowed is None or type(scheme) not in (LearnedPositions, SinusoidalPositions, RotaryPositions):
        return None
    B, T, C = h.shape
    H, D = attn.n_head, attn.head_dim
    q, k, v = attn.qkv(h).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
    if isinstance(scheme, RotaryPositions):  # learned and sinusoidal positions are added to the input instead
        q, k = rotate_pairs(q, positions, scheme), rotate_pairs(k, positions, scheme)
    logits = (q @ k.transpose(-1, -2) / math.sqrt(D)).masked_fill(~allowed, float("-inf"))
    y = logits.softmax(-1) @ v
    return attn.proj(y.transpose(1, 2).reshape(B, T, C))


NAIVE_REFERENCES.register("attention", plain_attention)


def plain_decoder(model, idx: torch.Tensor) -> torch.Tensor | None:
    """The decoder's logits for idx (B, T) from its definition (model/decoder.py's docstring),
    every piece written out in model/naive.py and each attention by its layer reference:

        x_0 = wte[idx] + PE;  (x, s) <- conditioning_l(x);  x <- x + Attn_l(LN_1(x) + s);
        x <- x + MLP_l(LN_2(x) + s);  logits = head(LN_f(x_L))           (s = 0 where there is no shift)

    None where a piece has no naive form (a plugin's MLP, norm or conditioning without a `naive`
    method, a layer no reference applies to)."""
    if type(model) is not Decoder:
        return None
    positions = torch.arange(idx.shape[1], device=idx.device)
    if (x := naive.embed(model, idx)) is None:
        return None
    for layer, block in enumerate(model.blocks):
        if type(block) is not Block or (conditioned := naive.conditioning(model.conditioning, layer, x)) is None:
            return None
        x, shift = conditioned
        if (h := naive.norm(block.ln1, x)) is None:
            return None
        if (attended := naive.attention(block.attn, h if shift is None else h + shift, positions)) is None:
            return None
        x = x + attended
        if (h := naive.norm(block.ln2, x)) is None:
            return None
        if (mixed := naive.mlp(block.mlp, h if shift is None else h + shift)) is None:
            return None
        x = x + mixed
    h = naive.norm(model.norm_f, x)
    return None if h is None else naive.head(model.head, h)


NAIVE_MODEL_REFERENCES.register("decoder", plain_decoder)
