"""Resuming a run: the config it continues under, and the data its checkpoint must agree with.

A resume continues the run as it was: only `train.steps` (never below the steps already trained),
the trackers and `train.viz_every` (they watch the run, they do not change it) may differ from its
recorded config, and the corpus must give the token streams the run trained on.
"""

from __future__ import annotations

from ..config import ConfigError, RunConfig
from ..runs.checkpoints import CheckpointError
from ..runs.run_dir import RunDir
from .trackers import TRACKER_FIELDS

RESUME_CHANGES = ("steps", "viz_every", *TRACKER_FIELDS)  # the train.* fields a resume may change


def resume_config(run: RunDir, checkpoint: str | None, requested: RunConfig, record: bool) -> RunConfig:
    """The run's own config with the changes a resume may make taken from `requested`;
    `checkpoint`: the one it resumes from (None: the run has none); `record`: write the changed
    config back (rank 0)."""
    cfg = run.read_config()
    if checkpoint is None:
        raise CheckpointError(
            f"{run.path} has no checkpoint to resume from (it stopped before its first one); "
            "train it again under another --name, or with --overwrite to replace it"
        )
    done = int(checkpoint.removeprefix("step_"))
    if requested.train.steps < done:
        raise ConfigError(
            f"{run.path} has trained {done} steps (checkpoint {checkpoint}); --train.steps "
            f"{requested.train.steps} is below that: give --train.steps {done} or more"
        )
    if any(getattr(requested.train, f) != getattr(cfg.train, f) for f in RESUME_CHANGES):
        for name in RESUME_CHANGES:
            setattr(cfg.train, name, getattr(requested.train, name))
        if record:
            run.write_config(cfg)
    return cfg


def check_same_data(run: RunDir, state: dict, manifest: dict, source: str) -> None:
    """Refuse to resume on token streams other than the checkpoint's (`state["data_sha256"]`, the
    token manifest's SHA-256s when it was saved; absent in checkpoints of older slmlab)."""
    trained_on = state.get("data_sha256")
    if trained_on is not None and trained_on != manifest["sha256"]:
        raise ConfigError(
            f"{run.path} trained on other data than data.source '{source}' gives now (its files "
            "changed since): resuming would train the rest on other text and score it on another validation "
            "split; restore the corpus, or train a new run (--name) on the new one"
        )
