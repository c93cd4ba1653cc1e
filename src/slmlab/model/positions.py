"""Extension point "positions": how a model knows where a token is.

A position scheme does up to two things: `embed(positions)` returns a (T, d_model) tensor added
to the token embeddings (or None), and `rotate(q, k, positions)` transforms queries and keys
inside attention (identity here). `max_positions` is the longest sequence it can place (None if
unbounded). `positions` is a (T,) tensor of absolute indices, which
continue from the KV cache length during generation, or (B, T) when the rows of a left-padded
batch start at different places: a scheme that takes those says `padding_safe = True` (a plugin's
that does not is given batches of equal-length prompts only; `slmlab check` holds one that says
so to decoding each prompt alone).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..registry import POSITIONS, require_members


def angle_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision position angles are computed in for a model of `dtype`: float32 (bf16 or fp16
    angles would be wrong by whole radians at long positions), float64 for a float64 model, so that
    it agrees with a float64 reference to float64 rounding."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def token_positions(start: int, T: int, padding: torch.Tensor | None, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The positions of T tokens from cache position `start`: (T,) absolute indices, or for a
    left-padded batch (`padding` (B,) counts) (B, T) ones counted from each row's first real token
    (0 over the padding), with (B, T) bool of which tokens are real (None without padding)."""
    positions = torch.arange(start, start + T, device=device)
    if padding is None:
        return positions, None
    real = positions[None, :] >= padding[:, None]
    return (positions[None, :] - padding[:, None]).clamp_min(0), real


class LearnedPositions(nn.Module):
    """GPT-2 style learned absolute embeddings: x_t = wte[token_t] + wpe[t], t < block_size."""

    padding_safe = True  # wpe looks up (T,) and (B, T) positions alike

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.max_positions = cfg.block_size
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)

    def embed(self, positions: torch.Tensor) -> torch.Tensor:
        return self.wpe(positions)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        return q, k


class RotaryPositions(nn.Module):
    """RoPE (Su et al.) on the first `rope_fraction` of each head's dimensions, with linear scaling.

    For a pair of dimensions (i, i + r/2) of the rotated part (width r), at position p:
        θ_i = rope_theta^(-2i / r),  angle = (p / rope_scale) θ_i
        (x_i, x_{i+r/2}) -> (x_i cos - x_{i+r/2} sin, x_i sin + x_{i+r/2} cos)
    so q_p · k_p' depends only on p - p'. rope_scale > 1 is position interpolation: a model trained
    at context L can be adapted to L * rope_scale. The cos/sin tables are derived from the positions
    (never stored in a checkpoint), so weights load at any context length.

    Every layer of one forward receives the same positions tensor, so the tables are made once per
    forward: the last positions tensor's tables are kept (recognised by identity and in-place
    version) and reused by the next layers, which then cost a roll and three elementwise ops each.
    While torch.compile traces, nothing is kept (the compiler shares the work itself), nor for
    positions made under torch.inference_mode (they carry no version to tell a change by)."""

    padding_safe = True  # per-row (B, T) positions give (B, 1, T, r) tables

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.max_positions = None
        self.rotary_dim = 2 * int(cfg.head_dim * cfg.rope_fraction / 2)
        self.theta, self.scale = cfg.rope_theta, cfg.rope_scale
        self._last: tuple | None = None  # (positions, its version, dtype, (cos2, sin2)) of the latest call

    def embed(self, positions: torch.Tensor) -> None:
        return None

    def angles(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(T,) or (B, T) positions -> cos, sin tables of shape (..., T, rotary_dim / 2), computed in
        `dtype` (float32, or float64 for a float64 model: angle_dtype)."""
        half = self.rotary_dim // 2
        inv_freq = self.theta ** (-torch.arange(half, device=positions.device, dtype=dtype) / half)
        angle = (positions.to(dtype) / self.scale)[..., None] * inv_freq
        return angle.cos(), angle.sin()

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-width tables in `dtype`, shaped to broadcast over (B, H, T, r):
        cos2 = [cos, cos] and sin2 = [-sin, sin], so that the rotation is x cos2 + swap(x) sin2
        with swap(x1, x2) = (x2, x1). (T, r) for (T,) positions, (B, 1, T, r) for per-row (B, T)."""
        if torch.compiler.is_compiling() or positions.is_inference():  # (inference tensors keep no version)
            return self._tables(positions, dtype)
        last = self._last
        if last is not None and last[0] is positions and last[1] == positions._version and last[2] == dtype:
            return last[3]
        made = self._tables(positions, dtype)
        self._last = (positions, positions._version, dtype, made)
        return made

    def _tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.angles(positions, angle_dtype(dtype))
        cos2, sin2 = torch.cat([cos, cos], dim=-1).to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)
        if positions.dim() == 2:  # (B, T, r) -> (B, 1, T, r): the same angle for every head
            cos2, sin2 = cos2[:, None], sin2[:, None]
        return cos2, sin2

    def _rotate(self, x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
        r = self.rotary_dim
        part = x if r == x.shape[-1] else x[..., :r]
        rotated = part * cos2 + part.roll(r // 2, dims=-1) * sin2  # rolling by r/2 swaps the halves
        return rotated if part is x else torch.cat([rotated, x[..., r:]], dim=-1)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        """q, k (B, H, T, D) at (T,) or per-row (B, T) positions -> rotated q, k."""
        cos2, sin2 = self.tables(positions, q.dtype)
        return self._rotate(q, cos2, sin2), self._rotate(k, cos2, sin2)


class SinusoidalPositions(nn.Module):
    """Fixed absolute positions (Vaswani et al.), nothing learned or stored:
    PE[t, 2i] = sin(t / 10000^(2i/d)),  PE[t, 2i+1] = cos(t / 10000^(2i/d))."""

    padding_safe = True  # (T,) and (B, T) positions alike

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.max_positions = None
        self.d_model = cfg.d_model
        # holds nothing; it follows the model's .double() / .float(), which tells embed the precision
        self.register_buffer("dtype_probe", torch.empty(0), persistent=False)

    def embed(self, positions: torch.Tensor) -> torch.Tensor:
        """(T,) or (B, T) positions -> (..., T, d_model), in float32 (float64 in a float64 model: the
        architectures add it in their stream's dtype)."""
        dtype = angle_dtype(self.dtype_probe.dtype)
        inv_freq = 10000.0 ** (-torch.arange(0, self.d_model, 2, device=positions.device, dtype=dtype) / self.d_model)
        angle = positions.to(dtype)[..., None] * inv_freq
        return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)[..., : self.d_model]

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        return q, k


POSITIONS.register("learned", LearnedPositions)
POSITIONS.register("rope", RotaryPositions)
POSITIONS.register("sinusoidal", SinusoidalPositions)


def embed_tokens(model: nn.Module, idx: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x_0 = wte[idx] + positions.embed(positions), (B, T, d_model), for idx (B, T) at (T,) or (B, T)
    positions, through `model`'s hook points as TransformerLens names them: `hook_embed`, the
    token embeddings, and `hook_pos_embed`, the position embeddings (B, T, d_model), which only a
    scheme that adds one (learned, sinusoidal) calls; RoPE's positions act inside attention."""
    x = model.hook_embed(model.wte(idx))
    pos_emb = model.positions.embed(positions)
    if pos_emb is None:
        return x
    # in the stream's dtype: a plugin's float32 table must not turn a bf16 model float32
    return x + model.hook_pos_embed(pos_emb.to(x.dtype).expand_as(x))


def untrained_positions_warning(cfg: ModelConfig, seq_len: int) -> str | None:
    """What a fresh model with learned positions leaves untrained (None if nothing): its windows
    start at position 0, so the embeddings of positions seq_len .. block_size - 1 get no gradient
    and stay random, and text past seq_len tokens (generation, eval --by-position) reads them."""
    if cfg.pos != "learned" or seq_len >= cfg.block_size:
        return None
    return (
        f"model.block_size = {cfg.block_size} with learned positions, but data.seq_len = {seq_len}: positions "
        f"{seq_len}-{cfg.block_size - 1} get no gradient and keep random embeddings, which text past {seq_len} "
        "tokens reads (generation, eval --by-position); set model.block_size = data.seq_len, or model.pos = 'rope'"
    )


def build_positions(cfg: ModelConfig) -> nn.Module:
    """The position scheme `model.pos` names (registry.POSITIONS)."""
    return require_members(POSITIONS[cfg.pos](cfg), "position scheme", cfg.pos, ("embed", "rotate", "max_positions"))
