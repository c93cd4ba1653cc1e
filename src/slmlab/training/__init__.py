"""Training: the loop, optimizer and schedule, checkpoints and the metrics log."""

from ..checkpoint import CheckpointError
from .trainer import Trainer, TrainingError, TrainResult, evaluate, train

__all__ = ["CheckpointError", "TrainResult", "Trainer", "TrainingError", "evaluate", "train"]
