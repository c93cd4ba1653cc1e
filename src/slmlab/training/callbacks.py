"""What watches a training run without changing it: callbacks the trainer calls at three points.

    on_step(trainer)            after every optimizer step, on every rank; trainer.step is the
                                number of steps done (a callback that needs a collective, as the
                                attention frames of a sharded model do, runs it here on every rank)
    on_record(trainer, record)  after each logging window, on every rank, once its record is in
                                metrics.jsonl: step, tokens, loss, lr, grad_norm, nan_skips,
                                dt_ms and tokens_per_s (absent for a window that timed no step),
                                and val_loss, val_ppl, val_bpb at an evaluation
    close()                     once, however the run ends (the last step, an error, a stop
                                signal); a curriculum's phases are runs of their own. An error
                                it raises is logged as a warning: the run's record is written

Only rank 0 writes files: a callback that writes checks `trainer.world.is_main`. The trainer's own
watchers are callbacks: the experiment trackers (trackers.py) and the attention frames of
`train.viz_every` (frames.py). A user's own come in through `Trainer(cfg, callbacks=[...])` or
`slmlab.training.train(cfg, callbacks=[...])`, e.g. to follow SMAT's learned similarity weight
λ = softplus(lambda_raw) of each layer at each evaluation:

    class Lambdas(TrainingCallback):
        def on_record(self, trainer, record):
            if "val_loss" in record and trainer.world.is_main:
                raws = [p for name, p in trainer.model.named_parameters() if name.endswith("lambda_raw")]
                print(record["step"], [round(F.softplus(p).item(), 3) for p in raws])

A callback reads the run; it does not change what is trained (no resume could reproduce that).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .trainer import Trainer


class TrainingCallback:
    """The three calls, each doing nothing until a subclass overrides it."""

    CALLS = ("on_step", "on_record", "close")

    def on_step(self, trainer: Trainer) -> None:
        """After every optimizer step, on every rank."""

    def on_record(self, trainer: Trainer, record: dict) -> None:
        """After each logging window's record is written, on every rank."""

    def close(self) -> None:
        """Once, when the run ends however it ends."""


def checked_callbacks(callbacks: Iterable[TrainingCallback] | None) -> list[TrainingCallback]:
    """The callbacks as a list (None: none), each refused in one line unless it has the three
    calls (a TrainingCallback subclass has them), before the run takes its lock or writes anything."""
    if callbacks is None:
        return []
    if isinstance(callbacks, TrainingCallback) or not isinstance(callbacks, Iterable):
        raise TypeError(f"callbacks is a {type(callbacks).__name__}, not a list of them: give [callback, ...]")
    callbacks = list(callbacks)
    for index, callback in enumerate(callbacks):
        missing = [name for name in TrainingCallback.CALLS if not callable(getattr(callback, name, None))]
        if missing:
            raise TypeError(
                f"callbacks[{index}] ({type(callback).__name__}) has no {', '.join(missing)}: "
                "give instances of a slmlab.training.TrainingCallback subclass"
            )
    return callbacks
