"""Checkpoints: safetensors weights plus a separate training-state file, written atomically.

    <run>/checkpoints/step_000100.safetensors   model weights (tied tensors stored once)
    <run>/checkpoints/step_000100.state.pt      optimizer (keyed by parameter name), step, tokens,
                                                every RNG, sampler position
    <run>/checkpoints/latest                    the name of the newest complete checkpoint
    <run>/final.safetensors                     the weights at the end of training

Every file goes to a temp name and is renamed into place; `latest` is rewritten only after both
files of a checkpoint exist, so a crash mid-write leaves the previous checkpoint as the latest.
Both hold full, unsharded tensors, whatever the number of processes that wrote them, so a run
checkpointed by N data-parallel ranks resumes on M. Loading never unpickles code: weights through safetensors, state through
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_file
from torch import nn

from ..files import atomic_write, atomic_write_text
from ..errors import CheckpointError


def save_weights(weights: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a state dict (tied aliases already dropped, see distributed.full_model_state)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(weights, tmp, metadata=metadata))


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load safetensors weights into `model`; any mismatch or corruption is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({str(err).splitlines()[0]})") from None
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit this model: {str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}") from None
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit this model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")


def save_checkpoint(directory: Path, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any], keep: int) -> Path:
    """Write step `step`'s weights and training state, point `latest` at it, prune old ones."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    save_weights(weights, directory / f"{name}.safetensors")
    atomic_write(directory / f"{name}.state.pt", lambda tmp: torch.save(state, tmp))
    atomic_write_text(directory / "latest", name)
    for old in sorted(directory.glob("step_*.safetensors"))[:-keep]:
        old.unlink()
        (directory / old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)
    return directory / name


def latest_checkpoint(directory: Path) -> str | None:
    pointer = directory / "latest"
    return pointer.read_text().strip() if pointer.is_file() else None


def load_checkpoint(directory: Path, model: nn.Module, name: str | None = None) -> dict[str, Any]:
    """Load weights of checkpoint `name` (default: latest) into model; return its training state."""
    name = name or latest_checkpoint(directory)
    if name is None:
        raise CheckpointError(f"no checkpoint in {directory} to resume from")
    load_weights(model, directory / f"{name}.safetensors")
    return load_training_state(directory, name)


def load_training_state(directory: Path, name: str | None = None) -> dict[str, Any]:
    """The training state (optimizer, step, RNGs, sampler) of checkpoint `name` (default: latest)."""
    name = name or latest_checkpoint(directory)
    if name is None:
        raise CheckpointError(f"no checkpoint in {directory}")
    try:
        return torch.load(directory / f"{name}.state.pt", weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{directory / name}.state.pt is missing") from None
    except Exception as err:  # unpickling errors of many kinds: report them as corruption
        raise CheckpointError(f"{directory / name}.state.pt is corrupt ({type(err).__name__})") from None
