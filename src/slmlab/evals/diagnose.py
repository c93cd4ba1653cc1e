"""Seed 000's diagnostics: the loss at init is about ln V, and one batch can be overfitted.

A correctly initialised LM predicts a near-uniform distribution, so its first loss is within a
few tenths of ln V (SMT's "~10.4" for a 32k vocabulary). A model that cannot drive the loss on a
single repeated batch to within 0.1 of the least any causal model can reach on it (`context_floor`:
0 unless positions with the same context have different next tokens) has a bug in its graph, its
mask or its optimizer wiring. Dropout is off for both measurements: it exists to stop memorising.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import RunConfig, check_config, resolve_vocab
from ..data.sampling import WindowSampler
from ..data.tokens import prepare_tokens
from ..model import build_model
from ..model.auxiliary import objective
from ..model.modes import eval_mode
from ..tables import counted
from ..training.distributed import World
from ..training.memory_room import check_training_room
from ..training.runtime import resolve_device, seed_everything

log = logging.getLogger("slmlab")

INIT_TOLERANCE = 0.3
OVERFIT_TARGET = 0.1


@dataclass
class Diagnosis:
    ln_vocab: float
    init_loss: float
    overfit_loss: float
    overfit_steps: int
    seconds: float
    floor: float = 0.0  # context_floor of the batch

    @property
    def overfit_target(self) -> float:
        return overfit_target(self.floor)

    @property
    def init_ok(self) -> bool:
        return abs(self.init_loss - self.ln_vocab) <= INIT_TOLERANCE

    @property
    def overfit_ok(self) -> bool:
        return self.overfit_loss < self.overfit_target

    def lines(self) -> list[str]:
        mark = {True: "PASS", False: "FAIL"}
        return [
            f"[{mark[self.init_ok]}] loss at init {self.init_loss:.3f} vs ln V = {self.ln_vocab:.3f} "
            f"(|diff| = {abs(self.init_loss - self.ln_vocab):.3f}, tolerance {INIT_TOLERANCE})",
            f"[{mark[self.overfit_ok]}] overfit one batch: loss {self.overfit_loss:.4f} after {counted(self.overfit_steps, 'steps')} "
            f"(target < {self._target_text()}; dropout off; {self.seconds:.1f}s)",
        ]

    def _target_text(self) -> str:
        if not self.floor:
            return f"{OVERFIT_TARGET}"
        return (
            f"{self.overfit_target:.4f}: {OVERFIT_TARGET} above the batch's floor {self.floor:.4f}, "
            "where positions with the same context have different next tokens"
        )


def overfit_target(floor: float) -> float:
    """The loss a bug-free model must get below on a batch whose context_floor is `floor`."""
    return floor + OVERFIT_TARGET


def context_floor(x: torch.Tensor, y: torch.Tensor) -> float:
    """The least mean cross-entropy any causal model can reach on inputs x and targets y (B, T).
    Positions whose contexts x[b, :t+1] are equal must share one prediction, so a group of n such
    positions whose next tokens occur c_k times each costs at least Σ_k c_k ln(n / c_k): its
    targets' entropy. Contexts are numbered position by position (the same number = the same
    context so far), one vectorised pass over B per position."""
    x, y = x.cpu().numpy(), y.cpu().numpy()
    context, total = np.zeros(len(x), dtype=np.int64), 0.0
    for t in range(x.shape[1]):
        _, context = np.unique(np.stack([context, x[:, t]], axis=1), axis=0, return_inverse=True)
        context = context.reshape(-1)
        _, group, counts = np.unique(np.stack([context, y[:, t]], axis=1), axis=0, return_inverse=True, return_counts=True)
        sizes = np.bincount(context)
        per_target = counts[group.reshape(-1)]  # for each position: how often its (context, target) occurs
        total += float(np.sum(np.log(sizes[context] / per_target)))
    return total / x.size


def diagnose(cfg: RunConfig, batch_size: int = 4, max_steps: int = 500, lr: float = 3e-3, progress: bool = True) -> Diagnosis:
    """Loss at init, then up to `max_steps` steps on one batch until the loss falls below the
    target (a tqdm bar, or one log line every 50 steps without one); both with dropout off. A
    curriculum is diagnosed as its first phase trains: the fresh model, on that phase's windows."""
    check_config(cfg)
    if cfg.phases:
        cfg = cfg.phase(0)
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    tokenizer, data = prepare_tokens(cfg.data)
    resolve_vocab(cfg, tokenizer.vocab_size)
    check_training_room(replace(cfg, train=replace(cfg.train, batch_size=batch_size)), device, World())
    model = build_model(cfg.model).to(device)
    x, y = WindowSampler(data.train, cfg.data.seq_len, batch_size, cfg.train.seed).next_batch()
    x, y = x.to(device), y.to(device)
    floor = context_floor(x, y)
    target = overfit_target(floor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    started, loss, step = time.perf_counter(), math.inf, 0
    bar = tqdm(total=max_steps, desc="overfit one batch", unit="step", disable=not progress, dynamic_ncols=True)
    with eval_mode(model):
        with torch.no_grad():
            init_loss = model(x, y)[1].item()
        while step < max_steps and loss >= target:
            _, out = model(x, y)
            optimizer.zero_grad(set_to_none=True)
            objective(model, out).backward()
            optimizer.step()
            loss, step = out.item(), step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if not progress and step % 50 == 0:
                log.info("diagnose: overfitting one batch, step %d/%d, loss %.4f (target %.2f)", step, max_steps, loss, target)
    bar.close()
    return Diagnosis(math.log(cfg.model.vocab_size), init_loss, loss, step, time.perf_counter() - started, floor)
