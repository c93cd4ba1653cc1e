"""The on-disk record of a run: its directory layout, checkpoints and metrics log."""

from .run_dir import RunDir, load_run

__all__ = ["RunDir", "load_run"]
