"""`eval_mode(model)`: a block run in eval mode, after which the model has the mode it had."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The block runs with `model` in eval mode (dropout off); afterwards, however the block ends
    (an error, a callback that stops it), the model is back in training mode if it was in it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
