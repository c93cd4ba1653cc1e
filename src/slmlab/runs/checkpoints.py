"""Checkpoints: safetensors weights plus a separate training-state file, written atomically and
checksummed.

    <run>/checkpoints/step_000100.safetensors   model weights (tied tensors stored once)
    <run>/checkpoints/step_000100.state.pt      optimizer (keyed by parameter name), step, tokens,
                                                every RNG, sampler position
    <run>/checkpoints/step_000100.sha256.json   SHA-256 of the two files above
    <run>/checkpoints/latest                    the name of the newest complete checkpoint
    <run>/final.safetensors                     the weights at the end of training (a finished
                                                run's, damaged, written again from the checkpoint
                                                of its last step by a resume: final_weights_fix)

Every file goes to a temp name and is renamed into place (fsync of file and folder first);
`latest` is rewritten only after all three files of a checkpoint exist, so a crash mid-write
leaves the previous checkpoint as the latest. Loading verifies the checksums: a zeroed or
bit-flipped file is reported by name, with the newest intact older checkpoint to resume from
(`slmlab train --resume RUN --from-checkpoint NAME`). Both files hold full, unsharded tensors,
whatever the number of processes that wrote them, so a run checkpointed by N data-parallel ranks
resumes on M. Loading never unpickles code: weights through safetensors, state through
`torch.load(weights_only=True)`. Each weights file also records the run config that saved it
(safetensors metadata): a config.json edited, or damaged into other valid values, after training
is refused rather than built into another model that the weights still fit (another
rope_theta, local_block or norm_eps).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file
from torch import nn

from ..config import ModelConfig, RunConfig, config_from_dict
from ..config.values import toml_literal
from ..errors import CheckpointError, RunFileError
from ..files import atomic_write, atomic_write_text, read_json, sha256_file
from ..tables import command_line

if TYPE_CHECKING:
    from .run_dir import RunDir

CHECKPOINT_NAME = re.compile(r"step_\d{6,}")
STATE_FIELDS = {"step": int, "tokens": int, "nan_skips": int, "optimizer": dict, "sampler": dict, "rng": dict}


def save_weights(weights: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """Write a state dict (tied aliases already dropped, see distributed.full_model_state);
    returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(weights, tmp, metadata=metadata))
    return sha256_file(path)


def verify_file(path: Path, expected: str | None, fix: str = "") -> None:
    """CheckpointError naming `path` (and `fix`, what to do, where given) when its SHA-256 is not
    `expected` (None: nothing recorded)."""
    if expected is not None and path.is_file() and sha256_file(path) != expected:
        advice = f"; {fix}" if fix else ""
        raise CheckpointError(f"{path} is damaged (its SHA-256 does not match the one recorded when it was written){advice}")


def config_metadata(cfg: RunConfig) -> dict[str, str]:
    """What a weights file records of the run that saved it: its config, as JSON."""
    return {"config": json.dumps(cfg.to_dict())}


def check_trained_model(path: Path, model_cfg: ModelConfig) -> None:
    """RunFileError when the weights at `path` record a model section (config_metadata) other
    than `model_cfg`, the one the run's config.json gives now. model.local_kernel may differ: it
    chooses how block-local attention is computed (a resume may change it), not what. Files
    without the record, or with one this slmlab cannot read (an older schema), are not compared."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get("config")
        trained = config_from_dict(json.loads(text)) if text else None
    except (SafetensorError, OSError, ValueError):  # ValueError: not JSON, or a ConfigError
        return
    if trained is None:
        return
    was, now = _model_settings(trained), _model_settings(dataclasses.replace(trained, model=model_cfg))
    for key in sorted(was.keys() | now.keys()):  # by dotted key: a variant's setting is named, not its whole section
        if key != "model.local_kernel" and was.get(key) != now.get(key):
            raise RunFileError(
                f"the run's config.json gives {key} = {toml_literal(now.get(key))}, but {path.name} was trained with {toml_literal(was.get(key))}: "
                "config.json was edited or damaged since; restore it from a copy of the run"
            )


def _model_settings(cfg: RunConfig) -> dict[str, Any]:
    return {key: value for key, value in cfg.settings().items() if key.startswith("model.")}


def load_weights(
    model: nn.Module, path: str | Path, sha256: str | None = None, model_cfg: ModelConfig | None = None, fix: str = ""
) -> None:
    """Load safetensors weights into `model`, checked against `sha256` when given (any mismatch or
    corruption is a CheckpointError, saying `fix` where given) and against the model section
    `model_cfg` the run's config gives (check_trained_model's RunFileError)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}")
    verify_file(path, sha256, fix)
    if model_cfg is not None:
        check_trained_model(path, model_cfg)
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({str(err).splitlines()[0]})") from None
    except RuntimeError as err:
        lines = str(err).splitlines()
        raise CheckpointError(f"{path} does not fit this model: {lines[1].strip() if len(lines) > 1 else err}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit this model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )


def _files(directory: Path, name: str) -> tuple[Path, Path, Path]:
    return directory / f"{name}.safetensors", directory / f"{name}.state.pt", directory / f"{name}.sha256.json"


def save_checkpoint(
    directory: Path, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any], keep: int, cfg: RunConfig
) -> Path:
    """Write step `step`'s weights (with `cfg`, the run's config: config_metadata), training state
    and their checksums, point `latest` at it, prune old ones."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    weights_path, state_path, sums_path = _files(directory, name)
    try:
        sums = {weights_path.name: save_weights(weights, weights_path, config_metadata(cfg))}
        atomic_write(state_path, lambda tmp: torch.save(state, tmp))
        sums[state_path.name] = sha256_file(state_path)
        atomic_write_text(sums_path, json.dumps(sums, indent=1) + "\n")
    except OSError as err:  # a full disk: no half checkpoint is left to be counted, pruned or resumed from
        for path in (weights_path, state_path, sums_path):
            path.unlink(missing_ok=True)
        raise CheckpointError(
            f"checkpoint {name} could not be written in {directory} ({err.strerror or err}); the checkpoints before it "
            "are kept: free space, then continue with slmlab train --resume"
        ) from None
    atomic_write_text(directory / "latest", name)
    for old in sorted(directory.glob("step_*.safetensors"))[:-keep]:
        _remove(directory, old.name.removesuffix(".safetensors"))
    return directory / name


def _remove(directory: Path, name: str) -> None:
    """Delete every file of checkpoint `name` (those that exist)."""
    for path in _files(directory, name):
        path.unlink(missing_ok=True)


def remove_checkpoints_after(directory: Path, step: int) -> list[str]:
    """Delete the checkpoints of steps after `step` (every file of each); their names, oldest first."""
    later = sorted(name for name in checkpoint_names(directory) if int(name.removeprefix("step_")) > step)
    for name in later:
        _remove(directory, name)
    return later


def checkpoint_names(directory: Path) -> list[str]:
    """Names of the checkpoints whose weights exist, newest first."""
    names = [p.name.removesuffix(".safetensors") for p in directory.glob("step_*.safetensors")]
    return sorted((n for n in names if CHECKPOINT_NAME.fullmatch(n)), reverse=True)


def checksums(directory: Path, name: str) -> dict[str, str]:
    """The recorded SHA-256 of checkpoint `name`'s files ({} for a checkpoint written before
    slmlab recorded them)."""
    path = _files(directory, name)[2]
    if not path.is_file():
        return {}
    fix = f"delete {path} to load the checkpoint unverified"
    sums = read_json(path, "checksum file", CheckpointError, fix)
    if not all(isinstance(v, str) for v in sums.values()):
        raise CheckpointError(f"checksum file {path} is damaged; {fix}")
    return sums


def is_intact(directory: Path, name: str) -> bool:
    """Both files of checkpoint `name` exist and match their recorded checksums."""
    weights_path, state_path, _ = _files(directory, name)
    try:
        sums = checksums(directory, name)
    except CheckpointError:
        return False
    return all(p.is_file() and (p.name not in sums or sha256_file(p) == sums[p.name]) for p in (weights_path, state_path))


def _older_intact(directory: Path, name: str | None) -> str:
    """The advice part of an error: the newest intact checkpoint older than `name`, if any."""
    for older in checkpoint_names(directory):
        if (name is None or older < name) and is_intact(directory, older):
            return (
                f"; an intact older checkpoint exists: resume from it with "
                f"`{command_line('slmlab', 'train', '--resume', directory.parent, '--from-checkpoint', older)}`"
            )
    return "; no intact older checkpoint exists"


def latest_checkpoint(directory: Path) -> str | None:
    """The name `latest` points at (None: no checkpoint yet); a damaged pointer is an error."""
    pointer = directory / "latest"
    if not pointer.exists():
        return None
    try:
        name = pointer.read_bytes()[:64].decode("utf-8", "replace").strip()
    except OSError as err:
        raise CheckpointError(f"checkpoint pointer {pointer} cannot be read ({err.strerror or err})") from None
    if not CHECKPOINT_NAME.fullmatch(name) or not _files(directory, name)[0].is_file():
        raise CheckpointError(
            f"checkpoint pointer {pointer} is damaged (it names {name[:40]!r}, not a checkpoint here)"
            + _older_intact(directory, None)
        )
    return name


def checkpoint_name(value: str | int) -> str:
    """A checkpoint as users name it: `step_000200`, or its step alone (200, or '200' from the
    command line) -> step_000200."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return f"step_{value:06d}"
    if not isinstance(value, str):
        raise CheckpointError(f"name a checkpoint as step_000200 or by its step (200), not {value!r}")
    return f"step_{int(value):06d}" if value.isascii() and value.isdigit() else value


def existing_checkpoint(directory: Path, name: str | int) -> str:
    """The name of checkpoint `name` (checkpoint_name: step_NNNNNN, or its step) if `directory`
    holds it with its weights file, else an error listing the ones there."""
    name = checkpoint_name(name)
    if not CHECKPOINT_NAME.fullmatch(name) or not _files(directory, name)[0].is_file():
        available = ", ".join(checkpoint_names(directory)[:5]) or "none"
        raise CheckpointError(f"no checkpoint {name!r} in {directory}; checkpoints there: {available}")
    return name


def load_checkpoint(
    directory: Path, model: nn.Module, name: str | None = None, model_cfg: ModelConfig | None = None
) -> dict[str, Any]:
    """Load weights of checkpoint `name` (default: latest) into model, after verifying both files
    against their checksums (and the weights against `model_cfg`: check_trained_model); return
    its training state."""
    name = latest_checkpoint(directory) if name is None else existing_checkpoint(directory, name)
    if name is None:
        raise CheckpointError(f"no checkpoint in {directory} to resume from")
    weights_path, state_path, _ = _files(directory, name)
    sums = checksums(directory, name)
    try:
        verify_file(state_path, sums.get(state_path.name))
        load_weights(model, weights_path, sums.get(weights_path.name), model_cfg)
    except CheckpointError as err:  # only now look for (and hash) the older checkpoints
        raise CheckpointError(f"{err}{_older_intact(directory, name)}") from None
    return load_training_state(directory, name)


def load_training_state(directory: Path, name: str | None = None) -> dict[str, Any]:
    """The training state (optimizer, step, RNGs, sampler) of checkpoint `name` (default:
    latest), with every field checked."""
    name = name or latest_checkpoint(directory)
    if name is None:
        raise CheckpointError(f"no checkpoint in {directory}")
    path = _files(directory, name)[1]
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing" + _older_intact(directory, name)) from None
    except Exception as err:  # unpickling errors of many kinds: report them as corruption
        raise CheckpointError(f"{path} is corrupt ({type(err).__name__})" + _older_intact(directory, name)) from None
    problem = None
    if not isinstance(state, dict):
        problem = f"it holds a {type(state).__name__}, not a training state"
    else:
        for field, kind in STATE_FIELDS.items():
            if not isinstance(state.get(field), kind) or isinstance(state.get(field), bool):
                problem = f"'{field}' is {'missing' if field not in state else 'of the wrong type'}"
                break
    if problem:
        raise CheckpointError(f"{path} is not a complete training state ({problem})" + _older_intact(directory, name))
    return state


def final_weights_fix(run: RunDir, summary: dict) -> str:
    """What to do about a finished run's missing or damaged final.safetensors: restore it, or write
    it again from the checkpoint of its last step (a resume of the finished run does), or read an
    older checkpoint."""
    kept = checkpoint_names(run.checkpoints)  # newest first; not the `latest` pointer, which may be damaged too
    if not kept:
        return "restore it from a copy of the run"
    read = f"read its checkpoint {kept[0]} (--checkpoint {kept[0]})"
    if isinstance(step := summary.get("step"), int) and kept[0] == f"step_{step:06d}":
        resume = command_line("slmlab", "train", "--resume", run.path)
        return f"restore it from a copy of the run, {read}, or write it again from that checkpoint of the same step: `{resume}`"
    return f"restore it from a copy of the run, or {read}"
