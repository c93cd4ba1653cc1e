"""One optimizer step: the learning rate from the schedule, `grad_accum` micro-batches of random
windows (forward under autocast, backward of loss / grad_accum), gradient clipping, then AdamW.

A step whose loss or gradient norm is not finite is skipped, and the host never waits for the
device to decide it: the skip is a device tensor, the fused AdamW kernel leaves the weights as they
were under it (optim.step_unless), and the trainer reads it with the loss at log steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig
from ..data.sampling import WindowSampler
from ..model.auxiliary import auxiliary_loss, auxiliary_modules
from .distributed import World, gradient_sync, local_scalar
from .optim import lr_at, step_unless
from .runtime import autocast


class OptimizerStep:
    """`step(n)` takes optimizer step n (0-based) -> (loss, gradient norm, skip) as 0-dim device
    tensors: the global mean loss over the micro-batches, the norm before clipping, 1.0 where the
    update was skipped. `auxiliary`: the global mean of the model's auxiliary terms in the latest
    step (None for a model without any: model/auxiliary.py).

    `forward`: the model as called (compiled or not), `wrapped`: the module DDP/FSDP2 made of
    `model` (gradient sync is held back until the last micro-batch)."""

    def __init__(
        self,
        model: nn.Module,
        wrapped: nn.Module,
        forward,
        optimizer: torch.optim.Optimizer,
        sampler: WindowSampler,
        train: TrainConfig,
        world: World,
        device: torch.device,
    ):
        self.model, self.wrapped, self.forward, self.optimizer = model, wrapped, forward, optimizer
        self.sampler, self.train, self.world, self.device = sampler, train, world, device
        self.auxiliary_modules = auxiliary_modules(model)  # modules that add a term to the objective
        self.auxiliary: torch.Tensor | None = None

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, self.train)
        self.world.seed_step(self.train.seed, step)  # several ranks: dropout masks of their own
        loss, grad_norm = self.forward_backward()
        skip = (~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float()
        step_unless(self.optimizer, skip)
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, skip

    def forward_backward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """grad_accum micro-batches forward and backward (of the loss plus the model's auxiliary
        terms, model/auxiliary.py), gradients clipped -> (global mean loss, gradient norm before
        clipping)."""
        t = self.train
        loss_sum = torch.zeros((), device=self.device)
        auxiliary_sum = torch.zeros((), device=self.device) if self.auxiliary_modules else None
        for micro in range(t.grad_accum):
            x, y = (self._to_device(b) for b in self.sampler.next_batch())
            with gradient_sync(self.wrapped, enabled=micro == t.grad_accum - 1):
                with autocast(self.device, t.dtype):
                    out = self.forward(x, y)  # under DDP with auxiliary terms, their sum third (WithAuxiliary)
                    loss = out[1]
                    extra = out[2] if len(out) > 2 else auxiliary_loss(self.auxiliary_modules)
                ((loss if extra is None else loss + extra) / t.grad_accum).backward()
            loss_sum += loss.detach().float()
            if extra is not None:
                auxiliary_sum += extra.detach()
        if auxiliary_sum is not None:
            self.auxiliary = self.world.mean(auxiliary_sum / t.grad_accum)
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
        return self.world.mean(loss_sum / t.grad_accum), local_scalar(grad_norm)

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """Host -> device: through pinned memory and without blocking on CUDA (a batch a sampler
        drew on the device already, as a step-time measurement's does, stays as it is)."""
        if self.device.type == "cuda" and batch.device.type == "cpu":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)
