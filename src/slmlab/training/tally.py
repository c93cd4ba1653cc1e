"""Per-window step statistics kept on the device, so a training step never waits for the host,
and the non-finite guard's verdict on them."""

from __future__ import annotations

import logging
import math

import torch

from ..errors import TrainingError
from ..tables import counted

log = logging.getLogger("slmlab")


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


def check_skips(window: dict, step: int, max_nan_skips: int, last: bool = False) -> None:
    """Warn of a window's skipped steps; abort when `max_nan_skips` came in a row, naming the
    model as the cause when they are every step of a run begun at step 0 (no update was made),
    as also when such a run ends (`last`) before that many steps: it trained nothing."""
    if window["skipped"]:
        log.warning("%s skipped (loss or gradient), up to step %d", counted(window["skipped"], "non-finite steps"), step)
    untrained = window["longest"] >= step  # not one update yet: the weights are the initial ones
    if window["longest"] < max_nan_skips and not (last and untrained):
        return
    if untrained:
        raise TrainingError(
            f"the initial model's loss or gradient is not finite ({counted(step, 'steps')} skipped, no update made), "
            "so no learning rate helps: a [model] value overflows (init_std, norm_eps, rope_scale, a variant's "
            "section); `slmlab diagnose CONFIG` shows the loss at initialisation"
        )
    raise TrainingError(
        f"{window['longest']} consecutive non-finite steps by step {step}; "
        "lower train.lr, raise train.warmup_steps or set train.grad_clip"
    )
