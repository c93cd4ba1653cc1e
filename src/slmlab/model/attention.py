"""Causal self-attention with its extension points, and the KV cache.

For a block input h (B, T, d_model), with H heads of width D = d_model / H:

    q, k, v = split(W_qkv h)                             each (B, H, T, D)
    q, k    = positions.rotate(q, k, t)                  (identity for learned positions)
    q, k, v, scale = extension(q, k, v, h, scale, state) for each attention extension:
                                                         score terms as extra q/k dimensions,
                                                         value gates as multipliers on v
    k, v    = cache.update(k, v)                         during generation
    y       = pattern(q, k, v, scale, q_start)           extension point "attention pattern"
    y       = extension.output(y, h, state)              for each extension that has `output`:
                                                         per-head output gates, (B, H, T, D)
    out     = W_o y                                      (B, T, d_model)

`state` is a per-layer dict that lives in the KV cache (None without one): an extension that needs
a running quantity over the prefix (a cumulative sum, say) keeps it there. Extensions are modules
handed to the attention once; `forward` has no branches on variants. When extensions make the
query/key width differ from the value width, v is zero-padded to it so the fused SDPA kernels
(which need equal widths) still run, and the padding is cut from the output.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..registry import ATTENTION_PATTERNS, require_members
from .explicit_attention import attention_scores, check_applied
from .hooks import HookPoint
from .layers import build_dropout


def lower_right_mask(Tq: int, Tk: int, device) -> torch.Tensor:
    """(Tq, Tk) bool causal mask of Tq queries that are the last Tq of Tk keys: query i sees keys
    j <= i + Tk - Tq."""
    return torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril(diagonal=Tk - Tq)


def padded_visible(sees, Tq: int, Tk: int, q_start: int, padding: torch.Tensor, device) -> torch.Tensor:
    """(B, Tq, Tk) bool of a left-padded batch (`padding` (B,) counts): the queries at cache
    positions q_start.. and the keys the last Tk positions up to them (`visible_in_rows`)."""
    q_pos = torch.arange(q_start, q_start + Tq, device=device)
    return visible_in_rows(sees, q_pos, torch.arange(q_start + Tq - Tk, q_start + Tq, device=device), padding)


def visible_in_rows(sees, q_pos: torch.Tensor, k_pos: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """(B, *S, Tq, Tk) bool for queries at cache positions q_pos (*S, Tq) and keys at k_pos (*S, Tk)
    in a left-padded batch (`padding` (B,) counts): row b's query i sees key j when the pattern
    `sees(i - p_b, j - p_b)` holds on the row's own positions and j is no padding (j >= p_b). A
    padding query sees its own key alone, so its output stays finite and unread."""
    pad = padding.view(-1, *([1] * q_pos.dim()))
    rows_q, rows_k = q_pos - pad, k_pos - pad  # (B, *S, Tq), (B, *S, Tk)
    real = sees(rows_q[..., :, None], rows_k[..., None, :]) & (rows_k >= 0)[..., None, :]
    return real | (q_pos[..., :, None] == k_pos[..., None, :])


ROWS_APART_FROM = 96  # positions; below, one call over the batch wins on CPU (32 rows of 16: 0.20 against 0.77 ms)


def attends_rows_apart(q: torch.Tensor) -> bool:
    """Whether a whole left-padded batch (B, H, T, D) is attended row by row (`rows_apart`): on
    CPU, eagerly, from ROWS_APART_FROM positions on. There one row's tokens through the fused
    kernels, unmasked, run faster than the batch under a padding mask (no padding computed,
    tensors that stay in cache: 2.2x at T = 1k for full attention; level near T = 80 at 6 heads
    of 64, where each call's overhead catches up); a GPU runs the batch in one kernel, and under
    torch.compile the paddings are data."""
    return q.device.type == "cpu" and q.shape[2] >= ROWS_APART_FROM and not torch.compiler.is_compiling()


def rows_apart(attend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """A whole left-padded batch (B, H, T, D) -> (B, H, T, D_v): row b's tokens (a view from
    padding[b] on) through `attend(q, k, v)` as a sequence of their own, written into the batch's
    output; a padding query's output is zero (no token reads it)."""
    out = q.new_empty(*q.shape[:3], v.shape[-1])
    for row, pad in enumerate(padding.tolist()):
        out[row, :, :pad] = 0.0
        out[row : row + 1, :, pad:] = attend(*(x[row : row + 1, :, pad:] for x in (q, k, v)))
    return out


class KVCache:
    """Preallocated keys/values of one layer: (B, H, max_len, D_k) and (B, H, max_len, D_v).

    `padding` (B,) long, or None: how many left-padding entries each row's buffer starts with (a
    batch of prompts of different lengths, GenerationMixin.generate_many); attention never reads
    them and positions count from the first real token. Extensions read it as state["padding"]
    (absent when the batch is not padded): an extension whose running state sums over the prefix
    (SMAT's centrality) leaves those entries out with it."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.length = 0
        self.state: dict = {}  # per-layer running state of attention extensions, and "padding"
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def padding(self) -> torch.Tensor | None:
        return self.state.get("padding")

    @padding.setter
    def padding(self, value: torch.Tensor | None) -> None:
        if value is None:
            self.state.pop("padding", None)
        else:
            self.state["padding"] = value

    def _allocate(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """The max_len-position buffers, shaped after the first keys/values (B, H, T, D)."""
        if self.k is None:
            B, H, _, _ = k.shape
            self.k = k.new_empty(B, H, self.max_len, k.shape[-1])
            self.v = v.new_empty(B, H, self.max_len, v.shape[-1])

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append (B, H, T, D) keys/values; return all cached ones so far."""
        self._allocate(k, v)
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; cannot append up to {end}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class FullCausal(nn.Module):
    """Pattern "full": query t attends to keys 0..q_start+t (fused SDPA kernels, no T x T tensor
    in training: only the rare chunked prefill onto a non-empty cache builds a (Tq, Tk) mask)."""

    padding_safe = True  # forward takes `padding`: left-padded batches decode exactly (decodes_padded)

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.dropout = cfg.dropout

    def make_cache(self, max_len: int) -> KVCache:
        return KVCache(max_len)

    def visible(self, Tq: int, Tk: int, q_start: int, device) -> torch.Tensor:
        """(Tq, Tk) bool: which keys each query sees (the queries are the last Tq of the Tk keys)."""
        return lower_right_mask(Tq, Tk, device)

    def sees(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The pattern on positions: query position i sees key position j iff j <= i."""
        return j <= i

    def forward(self, q, k, v, scale: float, q_start: int, padding: torch.Tensor | None = None):
        """`padding` (B,): left-padding keys per row, never attended (`padded_visible`)."""
        dropout = self.dropout if self.training else 0.0
        Tq, Tk = q.shape[2], k.shape[2]
        if padding is not None:
            if q_start == 0 and Tq == Tk and attends_rows_apart(q):  # a whole padded batch (a prefill)
                causal = functools.partial(F.scaled_dot_product_attention, is_causal=True, dropout_p=dropout, scale=scale)
                return rows_apart(causal, q, k, v, padding)
            mask = padded_visible(self.sees, Tq, Tk, q_start, padding, q.device)  # (B, Tq, Tk)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], dropout_p=dropout, scale=scale)
        if Tq == 1:  # one new query: it sees every key so far
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale)
        if q_start == 0:  # (branches, not is_causal=Tq > 1: under torch.compile Tq may be symbolic)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, scale=scale)
        mask = self.visible(Tq, Tk, q_start, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)


ATTENTION_PATTERNS.register("full", FullCausal)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, positions: nn.Module, extensions: list[nn.Module] | None = None):
        super().__init__()
        self.layer, self.n_head, self.head_dim = layer, cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.residual_projection = True
        self.resid_dropout = build_dropout(cfg.dropout)
        name = cfg.layer_pattern(layer)
        self.pattern = require_members(ATTENTION_PATTERNS[name](cfg, layer), "attention pattern", name, ("make_cache", "visible"))
        self.extensions = nn.ModuleList(extensions or [])
        self._output_extensions = [e for e in self.extensions if callable(getattr(e, "output", None))]
        self._positions = [positions]  # shared with the decoder; a list keeps it out of this module's parameters
        self.hook_q, self.hook_k, self.hook_v, self.hook_z = HookPoint(), HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern = HookPoint(), HookPoint()  # built only when hooked themselves
        self.attn_dropout = cfg.dropout

    def make_cache(self, max_len: int) -> KVCache:
        """The KV cache this layer's pattern needs (full: max_len positions; block-local: 2B)."""
        return self.pattern.make_cache(max_len)

    def decodes_padded(self) -> bool:
        """Whether this layer attends a left-padded batch exactly as each row alone: its pattern
        and every extension declare `padding_safe` (the pattern's forward takes `padding`)."""
        return getattr(self.pattern, "padding_safe", False) and all(getattr(e, "padding_safe", False) for e in self.extensions)

    def forward(self, h: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = h.shape
        q, k, v = self.qkv(h).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self._positions[0].rotate(q, k, positions)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        scale = 1.0 / math.sqrt(self.head_dim)
        state = cache.state if cache is not None else None
        for extension in self.extensions:
            q, k, v, scale = extension(q, k, v, h, scale, state)
        extra = q.shape[-1] - v.shape[-1]
        if extra:
            v = F.pad(v, (0, extra))
        q_start, padded = 0, {}
        if cache is not None:
            q_start = cache.length
            k, v = cache.update(k, v)
            if getattr(cache, "padding", None) is not None:  # only to a pattern that declares padding_safe (decodes_padded)
                padded = {"padding": cache.padding}
        if self.hook_attn_scores.has_own_hooks() or self.hook_pattern.has_own_hooks():  # not for hooks on every module
            y = self.attend_explicitly(q, k, v, scale, q_start, padded)[..., : self.head_dim]
        else:
            y = self.pattern(q, k, v, scale, q_start, **padded)[..., : self.head_dim]
        for extension in self._output_extensions:
            y = extension.output(y, h, state)
        y = self.hook_z(y).transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y))

    def attend_explicitly(self, q, k, v, scale: float, q_start: int, padded: dict) -> torch.Tensor:
        """The pattern's attention with its matrices built, for hook points to read or replace
        (TransformerLens's names): hook_attn_scores the logits (B, H, Tq, Tk), -inf where a query
        sees no key (`explicit_scores`), hook_pattern P = softmax(scores), each row summing to 1.
        P is checked to be the attention the fused pattern applies, on the rows of real queries (in
        eval mode, or without dropout). Hooks that only read leave the fused kernel's output, bit
        for bit; one that changes either matrix (in place too) makes the output P v. A hook on
        every module (register_module_forward_hook) does not see these two points: the fused
        kernels run, as they do under torch's FLOP counter."""
        padding = padded.get("padding")
        scores, fused = self.explicit_scores(q, k, scale, q_start, padding), self.pattern(q, k, v, scale, q_start, **padded)
        if not (self.training and self.attn_dropout):
            probs, applied = scores.softmax(-1), fused
            if padding is not None:  # a padding query's output is unread (rows_apart leaves it 0)
                real = (torch.arange(q_start, q_start + q.shape[2], device=q.device) >= padding[:, None])[:, None, :, None]
                probs, applied = probs * real, applied * real
            check_applied(probs, v, applied, self.pattern, f"layer {self.layer}")
        kept_scores, hooked_scores = scores.clone(), self.hook_attn_scores(scores)
        probs = hooked_scores.softmax(-1)
        kept_probs, hooked_probs = probs.clone(), self.hook_pattern(probs)
        if torch.equal(hooked_scores, kept_scores) and torch.equal(hooked_probs, kept_probs):
            return fused
        return F.dropout(hooked_probs, self.attn_dropout, self.training) @ v

    def explicit_scores(self, q, k, scale: float, q_start: int, padding: torch.Tensor | None) -> torch.Tensor:
        """The logits the pattern softmaxes, (B, H, Tq, Tk): Tq = Tk in a full forward, one new
        query over the cached keys in decoding; in a left-padded batch (`padding` (B,)) no query
        sees a padding key and a padding query its own key alone, as `padded_visible` says."""
        if padding is None:
            return attention_scores(self.pattern, q, k, scale, q_start)
        if not hasattr(self.pattern, "sees") or hasattr(self.pattern, "scores"):
            raise ConfigError(
                f"the attention pattern {type(self.pattern).__name__} gives no `sees(i, j)` rule to mask a left-padded "
                "batch by: generate its prompts one at a time to read hook_pattern or hook_attn_scores"
            )
        visible = padded_visible(self.pattern.sees, q.shape[2], k.shape[2], q_start, padding, q.device)[:, None]
        return ((q @ k.transpose(-2, -1)) * scale).masked_fill(~visible, float("-inf"))
