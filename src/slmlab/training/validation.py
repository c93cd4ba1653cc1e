"""Validation loss: the model scored on a split's fixed validation sample, across data-parallel ranks."""

from __future__ import annotations

import torch
from torch import nn

from ..data.sampling import validation_batches
from ..data.tokens import TokenSplit
from .distributed import World
from .runtime import autocast


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: TokenSplit,
    seq_len: int,
    batch_size: int,
    n_batches: int,
    device: torch.device,
    dtype: str = "fp32",
    world: World | None = None,
) -> float:
    """Mean cross-entropy over the fixed validation sample (token-weighted). Across data-parallel
    ranks each computes its rows of every batch (a rank left without rows runs one row at weight
    0, so sharded models see the same collectives) and the sums are reduced."""
    world = world or World()
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), device=device), torch.zeros((), device=device)
    for x, y in validation_batches(split, seq_len, batch_size, n_batches):
        rows = world.rows(len(x))
        weight = 1.0 if rows.stop > rows.start else 0.0
        x, y = (x[rows], y[rows]) if weight else (x[:1], y[:1])
        with autocast(device, dtype):
            _, loss = model(x.to(device), y.to(device))
        total += weight * loss.float() * y.numel()
        count += weight * y.numel()
    model.train(was_training)
    return (world.sum(total) / world.sum(count)).item()
