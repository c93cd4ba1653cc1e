"""Training: the loop, optimizer and schedule, checkpoints and the metrics log."""

from collections.abc import Iterable

from ..config import ConfigError, require_run_config
from ..errors import TrainingError
from ..runs.checkpoints import CheckpointError
from .callbacks import TrainingCallback
from .curriculum import train_curriculum
from .results import TrainResult
from .trainer import Trainer
from .trainer import train as train_single
from .validation import evaluate, score_validation


def train(
    cfg,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    from_checkpoint: str | int | None = None,
    callbacks: Iterable[TrainingCallback] = (),
) -> TrainResult:
    """Train a run: a curriculum of sub-runs when the config has [[phases]], else one run.
    `from_checkpoint` (with `resume`): continue from this checkpoint rather than the latest;
    `callbacks`: watchers of the run (callbacks.py), closed as each run, or phase, ends."""
    require_run_config(cfg)  # before cfg.phases is read; the trainer or curriculum checks its rules
    if from_checkpoint is not None and not resume:
        raise ConfigError("--from-checkpoint names a checkpoint to resume from: use it with --resume RUN")
    if resume and overwrite:
        raise ConfigError("overwrite replaces a run and resume continues it: give one of them")
    if cfg.phases:
        if from_checkpoint is not None:
            raise ConfigError("--from-checkpoint applies to one run: resume the curriculum's phase directory instead")
        return train_curriculum(cfg, resume=resume, overwrite=overwrite, progress=progress, callbacks=callbacks)
    return train_single(cfg, resume, overwrite, progress, from_checkpoint=from_checkpoint, callbacks=callbacks)


__all__ = [
    "CheckpointError",
    "TrainResult",
    "Trainer",
    "TrainingCallback",
    "TrainingError",
    "evaluate",
    "score_validation",
    "train",
    "train_curriculum",
]
