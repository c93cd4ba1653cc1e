"""Attention pattern "block_local" (seed 002): a token in block b attends causally within block b
and fully to block b - 1, with block length B = model.local_block.

Training and prefill never build a T x T matrix: the sequence is cut into blocks and each block's
queries attend their 2B-key window [block b-1, block b] through SDPA's fused kernels with a
lower-right causal mask (see `_blocked`), so compute and memory are O(T B) and no mask tensor is
built (under torch.compile, which cannot trace that bias, one of at most B x 2B). Block 0 has no
previous block and is exactly full causal attention (the seed's notebook let it attend zero
padding). T need not be a multiple of B: a last partial block gets its own call.

A second kernel computes the same pattern with FlexAttention: a block mask (which (128 x 128) tiles
hold any visible key) built from the mask predicate

    visible(i, j) = j <= i  and  j >= (i // B - 1) B

so only the tiles on and next to the diagonal are computed. The sequence reaches the kernel padded
with zeros to a whole number of tiles (`FLEX_TILE`): torch's fused CPU kernel (2.13) returned
zeros or NaN for some rows at other lengths (T = 8, 24, 40, ... on an AVX2 CPU), and a padded key is
never visible to a real query (j <= i < T), so the padding changes nothing else. `kernel` says
which one runs ("windows" or "flex"); `local_kernel.choose_local_kernel` sets it (the config's
`model.local_kernel`, or on CUDA whichever is measured faster). FlexAttention has no backward on
CPU and no attention dropout, so there it runs only for inference.

During generation the layer's cache keeps only the last 2B positions (`WindowedKVCache`), which is
all a query can see: position t needs keys from (t // B - 1) B to t. A left-padded batch of prompts
(`padding`, (Bsz,) counts) counts each row's positions from its first real token, so its blocks
start there: row r's query at cache position i sees key j iff sees(i - p_r, j - p_r) and j >= p_r.
Wherever a row's blocks start, a query sees no key more than 2B - 1 positions back, so each row
still needs at most the last 2B cache positions (the one window serves every row). A padded prefill
attends each row's tokens block by block as training does; a long chunk
onto a non-empty cache goes in chunks of B queries against 3B keys under explicit (Bsz, B, 3B)
masks: O(T B) either way, no (Tq, Tk) mask.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import (
    BlockMask,
    create_block_mask,
    flex_attention,
)
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..config import ModelConfig
from ..registry import ATTENTION_PATTERNS
from .attention import KVCache, attends_rows_apart, lower_right_mask, padded_visible, rows_apart, visible_in_rows


def lower_right(Tq: int, Tk: int, device):
    """Causal attention of Tq queries that are the last Tq of Tk keys: SDPA's lower-right causal
    bias (no mask tensor), or where that tensor subclass cannot be made (under torch.compile, which
    cannot trace it, and under a dispatch mode such as torch.utils.flop_counter's, in which it
    fails to wrap its tensor) the same (Tq, Tk) bool mask written out (at most B x 2B)."""
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return lower_right_mask(Tq, Tk, device)
    from torch.nn.attention.bias import causal_lower_right  # here: importing it loads TorchDynamo (~1 s of every command)

    return causal_lower_right(Tq, Tk)


class WindowedKVCache(KVCache):
    """A KV cache that keeps only the most recent `window` positions; `length` stays absolute.

    Keys and values live in one preallocated buffer of 2 x window positions: the kept ones at
    [start, end), each new chunk written after them, so a decoding step copies only its own token.
    When a chunk no longer fits, the kept window moves to the front first (once every ~window
    steps); a chunk longer than the free room (a long prefill) is attended together with the kept
    window, and only its last window positions are stored."""

    def __init__(self, window: int):
        super().__init__(max_len=2 * window)
        self.window = window
        self.start = self.end = 0

    @property
    def kept(self) -> int:
        return self.end - self.start

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append (B, H, T, D); return the kept keys/values followed by the new ones (in order)."""
        T = k.shape[2]
        self.length += T
        self._allocate(k, v)
        if self.kept + T > self.max_len:  # too long for the buffer: attend the chunk as it is
            keys = torch.cat([self.k[:, :, self.start : self.end], k], dim=2)
            values = torch.cat([self.v[:, :, self.start : self.end], v], dim=2)
            self.start, self.end = 0, min(self.window, keys.shape[2])
            self.k[:, :, : self.end] = keys[:, :, -self.end :]
            self.v[:, :, : self.end] = values[:, :, -self.end :]
            return keys, values
        if self.end + T > self.max_len:  # move the kept window to the front
            kept = self.kept
            self.k[:, :, :kept] = self.k[:, :, self.start : self.end].clone()
            self.v[:, :, :kept] = self.v[:, :, self.start : self.end].clone()
            self.start, self.end = 0, kept
        self.k[:, :, self.end : self.end + T] = k
        self.v[:, :, self.end : self.end + T] = v
        first, self.end = self.start, self.end + T
        self.start = max(self.start, self.end - self.window)
        return self.k[:, :, first : self.end], self.v[:, :, first : self.end]


FLEX_TILE = 128  # the block mask's BLOCK_SIZE (torch's default): the kernel works on FLEX_TILE x FLEX_TILE tiles


@functools.cache
def compiled_flex_attention():
    """flex_attention through torch.compile: a fused kernel (called eagerly it would materialise
    the T x T scores). Compiled once per process, on first use."""
    return torch.compile(flex_attention)


class BlockLocal(nn.Module):
    KERNELS = ("windows", "flex")
    padding_safe = True  # each row's blocks start at its first real token (forward's `padding`)

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.block = cfg.local_block
        self.dropout = cfg.dropout
        self.kernel = "flex" if cfg.local_kernel == "flex" else "windows"
        self._block_masks: dict[tuple[int, str], BlockMask] = {}

    def make_cache(self, max_len: int) -> KVCache:
        return WindowedKVCache(2 * self.block)

    def forward(self, q, k, v, scale: float, q_start: int, padding: torch.Tensor | None = None):
        """`padding` (Bsz,): left-padding keys per row, never attended; the row's positions, and
        so its blocks, count from its first real token (a padding query's output is finite and unread)."""
        dropout = self.dropout if self.training else 0.0
        if padding is not None:
            return self._padded(q, k, v, scale, q_start, padding, dropout)
        if q_start == 0 and q.shape[2] == k.shape[2]:
            return self._whole(q, k, v, scale, dropout)
        return self._from_cache(q, k, v, scale, q_start)

    def _whole(self, q, k, v, scale, dropout):
        """A whole sequence (training, a prefill onto an empty cache): FlexAttention or the windows."""
        if self.kernel == "flex" and q.device.type != "meta":  # meta: FLOP and memory counts (see _blocked)
            return self._flex(q, k, v, scale)
        return self._blocked(q, k, v, scale, dropout)

    def block_mask(self, T: int, device: torch.device) -> BlockMask:
        """FlexAttention's block mask of the pattern at length T (built once per length and device)."""
        key = (T, str(device))
        if key not in self._block_masks:
            self._block_masks[key] = create_block_mask(
                lambda batch, head, i, j: self.sees(i, j), None, None, T, T, device=device, BLOCK_SIZE=FLEX_TILE
            )
        return self._block_masks[key]

    def _flex(self, q, k, v, scale):
        """The same pattern through FlexAttention's fused kernel (no dropout: see the module docstring),
        on q, k, v zero-padded from T to the next multiple of FLEX_TILE positions, the output cut back."""
        if self.training and self.dropout:
            raise ValueError("the flex block-local kernel applies no attention dropout; use the windows kernel")
        T = q.shape[2]
        padded = -(-T // FLEX_TILE) * FLEX_TILE
        if padded != T:
            q, k, v = (F.pad(x, (0, 0, 0, padded - T)) for x in (q, k, v))
        out = compiled_flex_attention()(q, k, v, block_mask=self.block_mask(padded, q.device), scale=scale)
        return out[:, :, :T]

    def _blocked(self, q, k, v, scale, dropout):
        """(Bsz, H, T, D) -> (Bsz, H, T, D_v) in at most three SDPA calls, none with a mask tensor
        (under torch.compile, at most B x 2B ones: `lower_right`):

            block 0                  its queries against its own keys, causal
            full blocks b = 1..m-1   B queries against the 2B keys of [block b-1, block b] with a
                                     lower-right causal mask (query i of block b sees the whole
                                     previous block and keys <= i of its own); the windows are
                                     overlapping strided views of k and v (`unfold`): no copies
            a last partial block     its r < B queries against the B + r keys from block m-1 on,
                                     lower-right causal

        Nothing is padded, and backward keeps about what full attention's fused kernel keeps. The
        flex kernel's model is counted through this one on the meta device (`slmlab info`, a
        sweep's FLOP budget), where FlexAttention cannot run."""
        T, B = q.shape[2], self.block
        attend = functools.partial(F.scaled_dot_product_attention, dropout_p=dropout, scale=scale)
        if T <= B:
            return attend(q, k, v, is_causal=True)
        m, r = T // B, T % B  # (not divmod: torch.compile traces these on symbolic sizes)
        # block 0 on copies, so its call keeps B positions alive for backward, not the whole q, k, v
        parts = [attend(*(x[:, :, :B].clone() for x in (q, k, v)), is_causal=True)]
        if m > 1:

            def windows(x):  # (Bsz, H, T, D') -> (Bsz H, m-1, 2B, D') views: [block b-1, block b]
                return x[:, :, : m * B].unfold(2, 2 * B, B).transpose(-1, -2).flatten(0, 1)

            queries = q[:, :, B : m * B].unflatten(2, (m - 1, B)).flatten(0, 1)
            out = attend(queries, windows(k), windows(v), attn_mask=lower_right(B, 2 * B, q.device))
            parts.append(out.unflatten(0, q.shape[:2]).flatten(2, 3))
        if r:
            start = (m - 1) * B
            parts.append(attend(q[:, :, m * B :], k[:, :, start:], v[:, :, start:], attn_mask=lower_right(r, B + r, q.device)))
        return torch.cat(parts, dim=2)

    def visible(self, Tq: int, Tk: int, q_start: int, device) -> torch.Tensor:
        """(Tq, Tk) bool: query at q_start + i sees the key at position p (the keys are the last Tk
        positions up to the last query) when p <= its position and p is in its block or the one before."""
        q_pos = torch.arange(q_start, q_start + Tq, device=device)[:, None]
        k_pos = torch.arange(q_start + Tq - Tk, q_start + Tq, device=device)[None, :]
        return self.sees(q_pos, k_pos)

    def first_seen(self, i):
        """The first key position query position i sees: the start of the block before its own,
        (i // B - 1) B (negative in block 0, where it sees every earlier key). i: an int or a tensor."""
        return (i // self.block - 1) * self.block

    def sees(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The pattern itself: query position i sees key position j iff first_seen(i) <= j <= i
        (shared by `visible` and FlexAttention's block mask; a decoding step slices by first_seen)."""
        return (j <= i) & (j >= self.first_seen(i))

    def _padded(self, q, k, v, scale, q_start, padding, dropout):
        """Left-padded rows: the pattern on each row's own positions (cache position - padding).
        A whole padded batch (a prefill) row by row (`_rows_apart`);
        up to B queries (decoding steps) against all Tk keys under one (Bsz, Tq, Tk) mask; a longer
        chunk onto a cache in windows (`_padded_windows`)."""
        if q_start == 0 and q.shape[2] == k.shape[2]:
            return self._rows_apart(q, k, v, scale, padding, dropout)
        if q.shape[2] > self.block:
            return self._padded_windows(q, k, v, scale, q_start, padding)
        mask = padded_visible(self.sees, q.shape[2], k.shape[2], q_start, padding, q.device)[:, None]  # (Bsz, 1, Tq, Tk)
        return _masked_attention(q, k, v, scale, mask)

    def _rows_apart(self, q, k, v, scale, padding, dropout):
        """A whole left-padded batch (Bsz, H, T, D): each row's tokens attended as a sequence of
        their own (`_whole`: block by block from the row's first token). Row by row where
        `attends_rows_apart` (CPU, eager, long rows: the batch rotated by advanced indexing took
        1.3-3.7x as long); else the rows rotated so that their tokens come first and their padding
        last, attended as one batch and rotated back: a token sees no later position, so the
        padding behind it changes none of theirs (under torch.compile one gather that Inductor
        fuses, for any paddings)."""
        whole = functools.partial(self._whole, scale=scale, dropout=dropout)  # (training: a padded batch through an export)
        if attends_rows_apart(q):
            return rows_apart(whole, q, k, v, padding)
        return _rotate(whole(_rotate(q, padding), _rotate(k, padding), _rotate(v, padding)), -padding)

    def _padded_windows(self, q, k, v, scale, q_start, padding):
        """(Bsz, H, Tq, D) queries, the last Tq of the Tk keys -> (Bsz, H, Tq, D_v), in O(Tq B) as
        `_blocked`: the queries cut into n = ceil(Tq / B) chunks of B (the last one zero-padded),
        chunk c against the 3B keys ending with its last query. A row's blocks start at its own
        first token, but wherever they start a query at position i sees no key before i - 2B + 1,
        so those 3B keys hold all it can see; keys before the first (or after the last) are zeros,
        never visible. Each chunk's (Bsz, B, 3B) mask is `visible_in_rows` on its window's positions."""
        Bsz, Tq, B = q.shape[0], q.shape[2], self.block
        n, before = -(-Tq // B), k.shape[2] - Tq  # chunks; keys before the first query
        after = n * B - Tq

        def per_chunk(x: torch.Tensor) -> torch.Tensor:  # (Bsz, H, n, L, D') -> (Bsz n, H, L, D')
            return x.transpose(1, 2).flatten(0, 1)

        queries = per_chunk(F.pad(q, (0, 0, 0, after)).unflatten(2, (n, B)))

        def windows(x):  # chunk c's keys: cache positions q_start + cB - 2B .. q_start + cB + B - 1
            x = F.pad(x, (0, 0, 2 * B, after))[:, :, before : before + (n + 2) * B]
            return per_chunk(x.unfold(2, 3 * B, B).transpose(-1, -2))

        q_pos = q_start + torch.arange(n * B, device=q.device).view(n, B)  # (n, B)
        k_pos = q_pos[:, :1] - 2 * B + torch.arange(3 * B, device=q.device)  # (n, 3B)
        given = k_pos - q_start + before >= 0  # a key before k's first is a zero (one after it, j > i, is never seen)
        mask = visible_in_rows(self.sees, q_pos, k_pos, padding) & given[:, None, :]  # (Bsz, n, B, 3B)
        out = _masked_attention(queries, windows(k), windows(v), scale, mask.flatten(0, 1)[:, None])  # (Bsz n, H, B, D_v)
        return out.unflatten(0, (Bsz, n)).transpose(1, 2).flatten(2, 3)[:, :, :Tq]

    def _from_cache(self, q, k, v, scale, q_start):
        """Queries at q_start.. against the most recent keys (cached window + new): one (a decoding
        step) against the keys it sees, which are the last ones (from first_seen(q_start) on:
        min(q_start - first_seen(q_start), q_start) + 1 of them), unmasked; up to B under one
        (Tq, Tk) mask; a longer chunk in windows (`_padded_windows` with no padding)."""
        if q.shape[2] == 1:
            first = k.shape[2] - min(q_start - self.first_seen(q_start), q_start) - 1
            return F.scaled_dot_product_attention(q, k[:, :, first:], v[:, :, first:], scale=scale)
        if q.shape[2] > self.block:
            return self._padded_windows(q, k, v, scale, q_start, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        return _masked_attention(q, k, v, scale, self.visible(q.shape[2], k.shape[2], q_start, q.device))


def _rotate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(Bsz, H, T, D) with row r's position t <- (t + shift_r) mod T, one gather (whole (H, D) slices)."""
    T = x.shape[2]
    rows, steps = torch.arange(x.shape[0], device=x.device)[:, None], torch.arange(T, device=x.device)
    return x.transpose(1, 2)[rows, (steps + shift[:, None]) % T].transpose(1, 2)


def _masked_attention(q, k, v, scale, mask):
    """SDPA of (..., Tq, D) queries with a bool mask broadcast to (..., Tq, Tk); under torch.compile
    the scores written out: inductor (torch 2.13) failed to lower SDPA with a mask once the window
    had moved ("Exponent must be non-negative"), for a padded batch and for two or more rows."""
    if torch.compiler.is_compiling():
        scores = (q @ k.transpose(-1, -2)) * scale
        return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


ATTENTION_PATTERNS.register("block_local", BlockLocal)


def trains_as_full_warning(cfg: ModelConfig, seq_len: int) -> str | None:
    """What makes a model with block-local layers train as full attention (None if nothing): a
    window of at most two blocks (seq_len <= 2 * local_block), where every query's own block and
    the one before hold every earlier token."""
    if seq_len > 2 * cfg.local_block or "block_local" not in cfg.pattern_names:
        return None
    return (
        f"model.local_block = {cfg.local_block}: a training window of data.seq_len = {seq_len} tokens spans at most two "
        "blocks, where block-local attention sees every earlier token, so it trains exactly as full attention (it "
        "differs only on longer contexts); lower model.local_block below data.seq_len / 2 to train it"
    )
