"""Refuse, once the prompt is read, a generation whose caches would outgrow this machine's memory.

A KV cache is allocated whole as soon as the prompt is read, for the prompt and the new tokens
(at most the model's context; a block-local layer: its window), but on Linux its memory is only
lent (overcommit): each page becomes real when a token is written to it. So `slmlab generate
--num-samples 25000 --max-new-tokens 250` at the quickstart size (36.6 GiB of caches) would
start, sample for minutes, and be ended part-way by the out-of-memory killer with no message
(only a single allocation past RAM and swap is refused at once). Once the caches exist, this
counts the memory they will have filled when the last new token is written, at least

    filled = sum over caches of allocated x min(1, (prompt + new tokens) / the positions it holds)

(a cache's `max_len`; block_size for one that does not say), and refuses in one line, before any
token is sampled, when the model's weights and buffers and that exceed this machine's RAM and
swap. On Linux CPU only, as the training check (training/memory_room.py): a CUDA or MPS device
refuses an allocation past its memory at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import GenerationRoomError
from ..host_memory import host_memory_bytes
from ..tables import counted, human
from .accounting import held_bytes

SCREEN = 64  # d_model-wide fp32 values per token a batch's forward may hold before it is measured


def check_decoding_room(model: nn.Module, caches, rows: int, positions: int) -> None:
    """Refuse (GenerationRoomError, one line) decoding `rows` sequences up to `positions` tokens each
    (prompt and new tokens) into `caches` (the model's, allocated by the prompt's forward) when
    the model and the caches' filled part need more than this machine's RAM and swap."""
    have = host_memory_bytes() if next(model.parameters()).device.type == "cpu" else None
    if have is None:
        return
    weights = held_bytes([*model.parameters(), *model.buffers()])
    filled = sum(held_bytes(cache) * min(positions, size) // size for cache, size in _capacities(caches, model.cfg.block_size))
    if weights + filled <= have:
        return
    raise GenerationRoomError(
        f"decoding {counted(rows, 'sequences')} of up to {positions} tokens needs at least {human(weights + filled, 'B')} of memory "
        f"(weights {human(weights, 'B')}, caches {human(filled, 'B')}), but this machine has {human(have, 'B')} (RAM and swap)"
    )


def _capacities(caches, block_size: int) -> list[tuple[object, int]]:
    """Each cache with the positions it holds: its `max_len` (a whole-context cache sized to the
    generation, a window), else the model's context."""
    return [(cache, max(1, getattr(cache, "max_len", None) or block_size)) for cache in caches]


def check_forward_room(model: nn.Module, rows: int, tokens: int, forward: Callable[[int], object]) -> None:
    """Refuse (GenerationRoomError, one line), before a batch's first forward, a batch of `rows` sequences
    of `tokens` tokens whose forward cannot fit beside the weights: `generate --num-samples
    30000000` was ended by the out-of-memory killer in the prompt's forward, before its caches could
    be counted. `forward(k)` runs the forward of the batch's first k rows (into caches of their
    tokens). The most memory its tensors hold at once, f(k), is the largest of sums of a fixed part
    and a part per row, so convex in k: the batch's holds at least f(2) + (rows - 2)(f(2) - f(1)).
    Measured only where SCREEN d_model-wide values per token would be a sizeable part of the
    machine; on Linux CPU only, as check_decoding_room."""
    have = host_memory_bytes() if next(model.parameters()).device.type == "cpu" else None
    weights = held_bytes([*model.parameters(), *model.buffers()]) if have is not None else 0
    if have is None or rows < 3 or weights + rows * tokens * model.cfg.d_model * 4 * SCREEN <= have:
        return
    one, two = (_peak_bytes(model, lambda k=k: forward(k)) for k in (1, 2))
    need = weights + two + (rows - 2) * max(0, two - one)
    if need > have:
        raise GenerationRoomError(
            f"decoding {counted(rows, 'sequences')} of {counted(tokens, 'tokens')} needs at least {human(need, 'B')} of memory "
            f"(weights {human(weights, 'B')}, their first forward {human(need - weights, 'B')}), but this machine "
            f"has {human(have, 'B')} (RAM and swap)"
        )


class _LiveBytes(TorchDispatchMode):
    """The most memory the tensors operations make hold at once (each storage once, while a tensor
    made on it lives), the storages at `skip` (the weights) left out."""

    def __init__(self, skip: set[int]):
        super().__init__()
        self.skip, self.live, self.now, self.peak = skip, {}, 0, 0

    def _released(self, address: int) -> None:
        entry = self.live[address]
        entry[0] -= 1
        if entry[0] == 0:
            self.now -= entry[1]
            del self.live[address]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and (address := tensor.untyped_storage().data_ptr()) not in self.skip:
                if address not in self.live:
                    self.live[address] = [0, tensor.untyped_storage().nbytes()]
                    self.now += self.live[address][1]
                    self.peak = max(self.peak, self.now)
                self.live[address][0] += 1
                weakref.finalize(tensor, self._released, address)
        return out


def _peak_bytes(model: nn.Module, run: Callable[[], object]) -> int:
    """The most memory the tensors run() makes hold at once, the model's weights left out."""
    weights = {tensor.untyped_storage().data_ptr() for tensor in (*model.parameters(), *model.buffers())}
    with _LiveBytes(weights | {0}) as live:
        run()
    return live.peak
