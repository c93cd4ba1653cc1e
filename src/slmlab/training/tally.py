"""Per-window step statistics kept on the device, so a training step never waits for the host."""

from __future__ import annotations

import math

import torch


class StepTally:
    """Running totals kept on the device between two reads (one host sync per read): the loss
    summed over applied steps, applied and skipped step counts, and the current and the longest
    run of consecutive skipped steps."""

    def __init__(self, device: torch.device):
        self.device = device
        self.consecutive = torch.zeros((), device=device)
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.applied, self.skipped = (torch.zeros((), device=self.device) for _ in range(3))
        self.longest = self.consecutive.clone()

    def add(self, loss: torch.Tensor, skip: torch.Tensor) -> None:
        self.loss_sum += torch.where(skip > 0, torch.zeros_like(loss), loss)
        self.applied += 1 - skip
        self.skipped += skip
        self.consecutive = (self.consecutive + skip) * skip
        self.longest = torch.maximum(self.longest, self.consecutive)

    def read(self, grad_norm: torch.Tensor) -> dict:
        """The window's mean loss (NaN if every step was skipped), counts, and grad_norm's value."""
        values = torch.stack([self.loss_sum, self.applied, self.skipped, self.longest, grad_norm.float()]).tolist()
        loss_sum, applied, skipped, longest, norm = values
        self._reset()
        return {
            "loss": loss_sum / applied if applied else math.nan,
            "applied": int(applied),
            "skipped": int(skipped),
            "longest": int(longest),
            "grad_norm": norm,
        }
