"""Refuse, once the prompt is read, a generation whose caches would outgrow this machine's memory.

A KV cache is allocated whole, for the model's context (a block-local layer: its window), as soon
as the prompt is read, but on Linux its memory is only lent (overcommit): each page becomes real
when a token is written to it. So `slmlab generate --num-samples 25000 --max-new-tokens 250` at
the quickstart size (36.6 GiB of caches) would start, sample for minutes, and be ended part-way by
the out-of-memory killer with no message (only a single allocation past RAM and swap is refused
at once). Once the caches exist, this
counts, each storage once, the memory they will have filled when the last new token is written,
at least

    filled = allocated x min(1, (prompt + new tokens) / block_size)

(exact for a full-attention cache, which holds block_size positions; a smaller one, a window,
fills sooner), and refuses in one line, before any token is sampled, when the model's weights and
buffers and that exceed this machine's RAM and swap. On Linux CPU only, as the training check
(training/memory_room.py): a CUDA or MPS device refuses an allocation past its memory at once.
"""

from __future__ import annotations

from torch import nn

from ..errors import GENERATION_MEMORY_ADVICE, ConfigError
from ..host_memory import host_memory_bytes
from ..tables import counted, human
from .accounting import held_bytes


def check_decoding_room(model: nn.Module, caches, rows: int, positions: int) -> None:
    """Refuse (ConfigError, one line) decoding `rows` sequences up to `positions` tokens each
    (prompt and new tokens) into `caches` (the model's, allocated by the prompt's forward) when
    the model and the caches' filled part need more than this machine's RAM and swap."""
    have = host_memory_bytes() if next(model.parameters()).device.type == "cpu" else None
    if have is None:
        return
    weights = held_bytes([*model.parameters(), *model.buffers()])
    filled = held_bytes(caches) * min(positions, model.cfg.block_size) // model.cfg.block_size
    if weights + filled <= have:
        return
    raise ConfigError(
        f"decoding {counted(rows, 'sequences')} of up to {positions} tokens needs at least {human(weights + filled, 'B')} of memory "
        f"(weights {human(weights, 'B')}, caches {human(filled, 'B')}), but this machine has {human(have, 'B')} "
        f"(RAM and swap): {GENERATION_MEMORY_ADVICE}"
    )
