"""Validation loss and bits per byte: the model scored on a split's fixed validation sample,
across data-parallel ranks."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.sampling import validation_batches
from ..data.tokens import TokenSplit
from ..model.modes import eval_mode
from .distributed import World
from .runtime import autocast


@torch.no_grad()
def score_validation(
    model: nn.Module,
    split: TokenSplit,
    seq_len: int,
    batch_size: int,
    n_batches: int,
    device: torch.device,
    dtype: str = "fp32",
    world: World | None = None,
    token_bytes: torch.Tensor | None = None,
    progress: str = "",
    batch_losses: list[float] | None = None,
    disjoint: bool = False,
) -> tuple[float, float]:
    """(mean cross-entropy in nats, bits per byte) over the fixed validation sample; `batch_losses`
    (one process): each batch's mean cross-entropy appended, for paired comparisons batch by batch;
    `disjoint`: only windows that share no token (data/sampling.validation_offsets).

    The loss is token-weighted. Bits per byte = total loss / ln 2 / the UTF-8 bytes of the target
    tokens (`token_bytes`, (V,), from Tokenizer.token_bytes(); NaN without it): a figure that
    compares models across tokenizers. Across data-parallel ranks each computes its rows of every
    batch (a rank left without rows runs one row at weight 0, so sharded models see the same
    collectives) and the sums are reduced."""
    world = world or World()
    wide = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    total, count, size = (torch.zeros((), device=device, dtype=wide) for _ in range(3))
    lengths = token_bytes.to(device) if token_bytes is not None else None
    with eval_mode(model):
        for x, y in validation_batches(split, seq_len, batch_size, n_batches, progress=progress, disjoint=disjoint):
            rows = world.rows(len(x))
            weight = 1.0 if rows.stop > rows.start else 0.0
            x, y = (x[rows], y[rows]) if weight else (x[:1], y[:1])
            y = y.to(device)
            with autocast(device, dtype):
                _, loss = model(x.to(device), y)
            total += weight * loss.to(wide) * y.numel()
            if batch_losses is not None:
                batch_losses.append(loss.item())
            count += weight * y.numel()
            if lengths is not None:
                size += weight * lengths[y].sum()
    total, count, size = world.sum(total), world.sum(count), world.sum(size)
    bpb = (total / math.log(2) / size).item() if lengths is not None and size > 0 else math.nan
    return (total / count).item(), bpb


def evaluate(*args, **kwargs) -> float:
    """The mean validation cross-entropy alone (score_validation's first figure)."""
    return score_validation(*args, **kwargs)[0]


def evaluate_by_batch(*args, **kwargs) -> tuple[float, list[float]]:
    """(the mean validation cross-entropy, each batch's): for comparing two models on the same
    batches, pair by pair (experiments/stats.py's perplexity_change), so on windows that share no
    token (data/sampling.validation_offsets' `disjoint`): intervals over the batches treat them as
    independent."""
    batches: list[float] = []
    return score_validation(*args, batch_losses=batches, disjoint=True, **kwargs)[0], batches
