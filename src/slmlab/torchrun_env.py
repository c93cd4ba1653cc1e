"""What torchrun tells each process through its environment, read without importing torch (the
CLI reads the rank before it loads anything): RANK, WORLD_SIZE and LOCAL_RANK."""

from __future__ import annotations

import os
import sys

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


RANK_ERRORS = "SLMLAB_RANK_ERRORS"  # a folder `slmlab train --nproc` gives its processes for their one-line errors


def report_error(message: str) -> None:
    """Print slmlab's one-line error to stderr. Under `slmlab train --nproc`, every process also
    writes it to RANK_ERRORS/<rank>.txt, and only rank 0 prints it: the launcher prints another
    rank's where it differs from rank 0's (the same line from every process, written at once,
    came out interleaved)."""
    folder, rank = os.environ.get(RANK_ERRORS), process_rank()
    if folder and os.path.isdir(folder):
        with open(os.path.join(folder, f"{rank}.txt"), "w", encoding="utf-8") as file:
            file.write(message)
        if rank:
            return
    sys.stderr.write(message + "\n")
