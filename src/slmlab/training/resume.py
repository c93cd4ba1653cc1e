"""Resuming a run: the config it continues under, the data its checkpoint must agree with, and
the training state a checkpoint holds beside the weights.

A resume continues the run as it was: only `train.steps` (never below the steps already trained),
the trackers and `train.viz_every` (they watch the run, they do not change it), where it runs
(`train.device`, `train.threads`, `train.compile`, `train.parallel`, `model.local_kernel`: another
machine, processes that shard the model rather than replicate it, or the other kernel of the same
block-local pattern; equal to rounding, where an unchanged resume is bit-exact) and where the data
lies (`data.source`, `data.cache_dir`: a corpus moved, or named relative to another folder) may
differ from its recorded config, and the corpus must give the token streams the run trained on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from ..config import ConfigError, RunConfig
from ..errors import RunFileError
from ..runs.checkpoints import CheckpointError, checkpoint_names, remove_checkpoints_after
from ..runs.run_dir import RunDir, phase_runs
from ..tables import counted
from .distributed import full_optimizer_state
from .runtime import peak_memory_bytes, rng_state, set_rng_state
from .trackers import TRACKER_FIELDS

if TYPE_CHECKING:
    from .trainer import Trainer

log = logging.getLogger("slmlab")

# the train.* fields a resume may change: what watches the run, and where and how it runs
WHERE_IT_RUNS = ("device", "threads", "compile", "parallel")
RESUME_CHANGES = ("steps", "viz_every", *TRACKER_FIELDS, *WHERE_IT_RUNS)
KERNEL_CHOICE = ("local_kernel",)  # the model.* fields it may change: how a pattern is computed, not which
DATA_LOCATION = ("source", "cache_dir")  # the data.* fields it may change: where, not what (the token streams are checked)
RESUMABLE = (("train", RESUME_CHANGES), ("model", KERNEL_CHOICE), ("data", DATA_LOCATION))  # (section, its fields)


def resumable_settings() -> set[str]:
    """The dotted settings a resume may change (the module docstring says why each)."""
    return {f"{section}.{name}" for section, names in RESUMABLE for name in names}


def curriculum_phase(run: RunDir) -> tuple[RunDir, RunConfig, int] | None:
    """(the curriculum, its config, the phase's index) when `run` is a phase of a curriculum
    slmlab can read in the folder above it; else None."""
    curriculum = RunDir(run.path.parent)
    try:
        cfg = curriculum.read_config() if curriculum.config.is_file() else None
    except (ConfigError, RunFileError):
        return None  # not a curriculum slmlab can read: the run stands on its own
    phases = [phase.path.name for phase in phase_runs(curriculum.path, cfg)] if cfg is not None and cfg.phases else []
    return (curriculum, cfg, phases.index(run.path.name)) if run.path.name in phases else None


def check_no_later_phase(run: RunDir, done: int, steps: int) -> None:
    """Refuse to move the end of a curriculum's phase (train on from step `done` to `steps`, or
    from a checkpoint before its end) once a later phase has begun from that end: the later
    phases would descend from an end the phase no longer has, and the curriculum, finished, would
    never train them again."""
    found = curriculum_phase(run)
    if found is None:
        return
    curriculum, cfg, index = found
    later = [phase.path.name for phase in phase_runs(curriculum.path, cfg, begun=True)[index + 1 :]]
    ended = run.read_summary().get("step")
    if later and (done < steps or (ended is not None and done < ended)):
        raise ConfigError(
            f"{run.path} is phase {index + 1} of the curriculum {curriculum.path}, and {', '.join(later)} began from its end: "
            f"training it on from step {done} would leave them descended from an end it no longer has; "
            "resume the curriculum itself, or train it again under another --name"
        )


def relocated(recorded: RunConfig, requested: RunConfig) -> bool:
    """Whether `requested` reads the run's data from another place than it `recorded`."""
    return any(getattr(recorded.data, name) != getattr(requested.data, name) for name in DATA_LOCATION)


def resume_config(run: RunDir, checkpoint: str | None, requested: RunConfig) -> RunConfig:
    """The run's own config with the changes a resume may make taken from `requested`;
    `checkpoint`: the one it resumes from (None: the run has none). The caller records it once
    the data is checked (check_same_data)."""
    cfg = run.read_config()
    if checkpoint is None:
        partial = checkpoint_names(run.checkpoints) if run.checkpoints.is_dir() else []
        when = f"while writing its first, {partial[-1]}, which is incomplete" if partial else "before its first one"
        raise CheckpointError(
            f"{run.path} has no checkpoint to resume from (it stopped {when}); "
            "train it again under another --name, or with --overwrite to replace it"
        )
    done = int(checkpoint.removeprefix("step_"))
    if requested.train.steps < done:
        raise ConfigError(
            f"{run.path} has trained {counted(done, 'steps')} (checkpoint {checkpoint}); --train.steps "
            f"{requested.train.steps} is below that: give --train.steps {done} or more"
        )
    check_no_later_phase(run, done, requested.train.steps)
    for section, names in RESUMABLE:
        for name in names:
            setattr(getattr(cfg, section), name, getattr(getattr(requested, section), name))
    return cfg


def check_same_data(run: RunDir, recorded_cfg: RunConfig, trained_on: dict | None, manifest: dict, cfg: RunConfig) -> None:
    """Refuse to resume `run` (whose config.json holds `recorded_cfg`) under `cfg` on token streams
    other than those it trained on (`trained_on`: the token manifest's SHA-256s a checkpoint or
    summary recorded; None in those of older slmlab, which are then trusted only where the run's own
    data.source is read)."""
    source, recorded, moved = cfg.data.source, recorded_cfg.data.source, relocated(recorded_cfg, cfg)
    if trained_on is None and moved:
        raise ConfigError(
            f"{run.path} was saved by an older slmlab that did not record the token streams it trained on, so "
            f"data.source '{source}' cannot be checked to give them: resume with its own data.source '{recorded}'"
        )
    if trained_on is not None and trained_on != manifest["sha256"]:
        why = f"not the corpus it trained on ('{recorded}'), or its files changed since" if moved else "its files changed since"
        raise ConfigError(
            f"{run.path} trained on other data than data.source '{source}' gives now ({why}): resuming would train the "
            "rest on other text and score it on another validation split; restore the corpus, or train a new run "
            "(--name) on the new one"
        )


def record_resumed(run: RunDir, recorded_cfg: RunConfig, cfg: RunConfig) -> None:
    """Write the config a resume continues under to the run, where it differs from the one recorded
    (`recorded_cfg`: more steps, another tracker, the data's new place), once its data is checked."""
    if cfg.to_dict() != recorded_cfg.to_dict():
        run.write_config(cfg)


def training_state(trainer: Trainer) -> dict:
    """Everything but the weights that a bit-exact resume needs: the counters, the optimizer's
    state (gathered whole: every rank takes part), the sampler's position, every RNG's state, and
    the time, peak memory and token streams so far."""
    elapsed = time.perf_counter() - trainer.started if trainer.started else 0.0
    return {
        "step": trainer.step,
        "tokens": trainer.tokens,
        "nan_skips": trainer.nan_skips,
        "optimizer": full_optimizer_state(trainer.model, trainer.optimizer),
        "sampler": trainer.sampler.state_dict(),
        "rng": rng_state(),
        "train_seconds": trainer.seconds_before + elapsed,
        "peak_memory_bytes": max(trainer.peak_before, peak_memory_bytes(trainer.device)),
        "data_sha256": trainer.data.manifest["sha256"],  # the token streams trained on (checked on resume)
        "local_kernel": trainer.local_kernel,  # a timed block-local kernel choice, kept on resume
    }


def where_it_ran(cfg: RunConfig, recorded: RunConfig) -> RunConfig:
    """`cfg` with the device, threads, compile and parallel settings `recorded`: what a resume that
    trains no step (one that writes a finished run's summary or final weights again) records, since
    every step's speed was measured where the run trained (a sweep compares its runs' settings)."""
    kept = {name: getattr(recorded.train, name) for name in WHERE_IT_RUNS}
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **kept))


def restore_state(trainer: Trainer, state: dict) -> None:
    """Put a checkpoint's training_state back (the optimizer's is loaded with the weights), once
    its data is checked against the corpus; metrics.jsonl loses the records after its step."""
    recorded = trainer.run.read_config()
    check_same_data(trainer.run, recorded, state.get("data_sha256"), trainer.data.manifest, trainer.cfg)
    if trainer.world.is_main:
        trains = state["step"] < trainer.cfg.train.steps
        record_resumed(trainer.run, recorded, trainer.cfg if trains else where_it_ran(trainer.cfg, recorded))
    trainer.sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])
    trainer.step, trainer.tokens, trainer.nan_skips = state["step"], state["tokens"], state["nan_skips"]
    trainer.seconds_before, trainer.peak_before = state.get("train_seconds", 0.0), state.get("peak_memory_bytes", 0)
    if trainer.world.is_main:
        trainer.metrics.truncate_after(trainer.step)
        drop_superseded(trainer.run, trainer.step, trainer.cfg.train.steps)
    log.info("resumed %s at step %d", trainer.run.path, trainer.step)


def drop_superseded(run: RunDir, step: int, steps: int) -> None:
    """Remove what a resume from `step` leaves behind, as metrics.jsonl loses its later records:
    the checkpoints after it (an end the run leaves under --from-checkpoint, or one a kill cut
    short), and, when it trains on (step < steps), the final weights and summary of the end it
    had (for a curriculum's phase, the curriculum's summary too). Until it finishes again the run
    is unfinished, and every reader takes its latest checkpoint, not the weights of an end it no
    longer has (the final step always has its own checkpoint, so resuming from that end keeps its
    weights there)."""
    later = remove_checkpoints_after(run.checkpoints, step)
    removed = [f"checkpoints {', '.join(later)}"] if later else []
    if step < steps:
        ends = {run.final_weights: "final.safetensors", run.summary: "summary.json"}
        found = curriculum_phase(run)
        if found:  # a curriculum's summary is made of its phases': it goes too
            ends[found[0].summary] = f"the curriculum's summary.json ({found[0].path})"
        for path, label in ends.items():
            if path.is_file():
                path.unlink()
                removed.append(label)
    if removed:
        log.info("resuming %s at step %d: removed %s (unfinished until it ends again)", run.path, step, "; ".join(removed))
