"""What torchrun tells each process through its environment, read without importing torch (the
CLI reads the rank before it loads anything): RANK, WORLD_SIZE and LOCAL_RANK."""

from __future__ import annotations

import os

from .errors import ConfigError


def env_int(name: str, default: int) -> int:
    """A whole-number environment variable torchrun sets; `default` when unset or blank."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"environment variable {name} = {text!r} is not a whole number; unset it or launch with torchrun"
        ) from None


def world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return env_int("WORLD_SIZE", 1)


def process_rank() -> int:
    """This process's rank in a torchrun group, 0 outside one: a RANK left alone in the shell
    starts no group, so it must not silence the only process's output. A variable that is not a
    number also reads 0 here; `World.from_env` refuses it, naming it."""
    try:
        return env_int("RANK", 0) if world_size() > 1 else 0
    except ConfigError:
        return 0
