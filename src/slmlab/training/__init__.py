"""Training: the loop, optimizer and schedule, checkpoints and the metrics log."""

from ..runs.checkpoints import CheckpointError
from .curriculum import train_curriculum
from .trainer import Trainer, TrainingError, TrainResult
from .trainer import train as train_single
from .validation import evaluate


def train(cfg, resume: bool = False, overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Train a run: a curriculum of sub-runs when the config has [[phases]], else one run."""
    run = train_curriculum if cfg.phases else train_single
    return run(cfg, resume=resume, overwrite=overwrite, progress=progress)


__all__ = ["CheckpointError", "TrainResult", "Trainer", "TrainingError", "evaluate", "train", "train_curriculum"]
