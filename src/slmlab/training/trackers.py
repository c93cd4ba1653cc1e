"""Experiment trackers (`train.trackers = ["tensorboard", "wandb", "trackio"]`, any subset).

metrics.jsonl stays the record; a tracker receives the same scalars at the same steps, the
resolved config once, and the run's group and tags (a sweep groups its runs under its name and
tags each with its variant and seed). Each tracker is an optional extra; asking for one that is
not installed is a one-line error before training starts.

    tensorboard  event files in RUN/tensorboard (torch.utils.tensorboard); the config as text
    wandb        RUN/wandb, offline unless WANDB_MODE says otherwise (no account needed); the run
                 id is kept in RUN/trackers.json so a resumed run continues the same wandb run;
                 wandb's service writes the run file in the background after the run finishes,
                 and it is whole once that service has closed it (at process exit, or after
                 `wandb.teardown()` in a script that reads or syncs it in-process)
    trackio      trackio's local store ($TRACKIO_DIR, default ~/.cache/huggingface/trackio)

Only the main process logs (rank 0 under torchrun). A tracker registers as
`TRACKERS.register(name, factory)`, factory(cfg, run_path, resume) -> object with
`log(scalars: dict[str, float], step: int)` and `close()`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..errors import RunFileError
from ..files import atomic_write_text, read_json
from ..registry import TRACKERS, require_members
from .callbacks import TrainingCallback

log = logging.getLogger("slmlab")
IDS_FILE = "trackers.json"
TRACKER_FIELDS = ("trackers", "tracker_project", "tracker_group", "tracker_tags")  # they watch a run, they do not change it


def _require(module: str, tracker: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"train.trackers includes '{tracker}' but it is not installed: pip install 'slmlab[{tracker}]'"
        ) from None


class TensorBoardTracker:
    def __init__(self, cfg: RunConfig, run: Path, resume: bool):
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run / "tensorboard"))
        if not resume:
            self.writer.add_text("config", "```\n" + json.dumps(cfg.to_dict(), indent=2) + "\n```", 0)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


def _run_id(run: Path, tracker: str) -> str:
    """A stable id for this run in `tracker`, kept in RUN/trackers.json (made on first use)."""
    path = run / IDS_FILE
    fix = "delete it: the tracker then starts a new run"
    ids = read_json(path, "tracker run ids", RunFileError, fix) if path.is_file() else {}
    if tracker not in ids:
        ids[tracker] = uuid.uuid4().hex[:12]
        atomic_write_text(path, json.dumps(ids, indent=2) + "\n")
    return ids[tracker]


class WandbTracker:
    def __init__(self, cfg: RunConfig, run: Path, resume: bool):
        wandb = _require("wandb", "wandb")
        t = cfg.train
        self.run = wandb.init(
            project=t.tracker_project,
            name=cfg.name,
            group=t.tracker_group or None,
            tags=list(t.tracker_tags) or None,
            config=cfg.to_dict(),
            dir=str(run),
            id=_run_id(run, "wandb"),
            resume="allow",
            mode=os.environ.get("WANDB_MODE") or "offline",
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker:
    def __init__(self, cfg: RunConfig, run: Path, resume: bool):
        self.trackio = _require("trackio", "trackio")
        t = cfg.train
        self.trackio.init(
            project=t.tracker_project,
            name=cfg.name,
            group=t.tracker_group or None,
            config=cfg.to_dict(),
            resume="allow" if resume else "never",
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.trackio.log(scalars, step=step)

    def close(self) -> None:
        self.trackio.finish()


TRACKERS.register("tensorboard", TensorBoardTracker)
TRACKERS.register("wandb", WandbTracker)
TRACKERS.register("trackio", TrackioTracker)


def scalars_of(record: dict) -> dict[str, float]:
    """The finite numbers of a metrics record, `step` aside: what a tracker plots."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class Trackers(TrainingCallback):
    """The trackers `train.trackers` names, for one run on the main process: each logging
    window's record goes to every one of them."""

    def __init__(self, cfg: RunConfig, run: Path, resume: bool):
        self.open = []
        try:
            for name in cfg.train.trackers:
                self.open.append(require_members(TRACKERS[name](cfg, run, resume), "tracker", name, ("log", "close")))
        except BaseException:
            self.close()
            raise

    def on_record(self, trainer, record: dict) -> None:
        scalars = scalars_of(record)
        for tracker in self.open:
            tracker.log(scalars, record["step"])

    def close(self) -> None:
        """Flush and finish every tracker (a tracker's failure to finish is logged, not raised:
        the run's own record is already safe)."""
        for tracker in self.open:
            try:
                tracker.close()
            except Exception as err:  # a tracker library's own failure; the run's files are written
                log.warning("tracker %s did not finish cleanly: %s", type(tracker).__name__, err)
        self.open = []
