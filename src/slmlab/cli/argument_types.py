"""Types of the command line's arguments: each turns an argument's text into its value or
refuses it with the reason argparse prints beside the option ("--steps: must be a whole number >
0 ..."). No torch here, as for all of cli/ at module level."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..config.checks import INT64_LIMIT, check_seed
from ..errors import ConfigError


def positive_int(text: str) -> int:
    value = number(text, int)
    if not 0 < value < INT64_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number > 0 and below 2**63, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = number(text, int)
    if not 0 <= value < INT64_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 and below 2**63, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def number(text: str, kind: type):
    """`text` as an int or a finite float."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def int_list(text: str) -> list[int]:
    """'256,512,1024' -> [256, 512, 1024]: at least one entry, each > 0 and given once."""
    values = [positive_int(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"give comma-separated whole numbers, e.g. 256,512,1024; got {text!r}")
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{repeated[0]} is given twice in {text!r}; give each once")
    return values


def seed(text: str) -> int:
    try:
        return check_seed("the seed", number(text, int))
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("the seed ")) from None


def checkpoint_name(value: str) -> str:
    """A checkpoint as users name it: `step_000200`, or its step alone (`200`) -> step_000200."""
    from ..runs.checkpoints import checkpoint_name as named  # (torch: only once --checkpoint is given)

    return named(value)


FILE_SUFFIXES = (
    *(".png", ".gif", ".mp4", ".svg", ".pdf", ".jpg", ".jpeg", ".md", ".html", ".json", ".txt", ".csv"),
    *(".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".py", ".toml"),
)


def output_folder(text: str) -> str:
    """An output that names a folder (viz's --out, export's OUT): a name with a file's suffix that
    is no folder yet (viz.png, model.safetensors) is refused, since the files would go into a new
    folder of that name."""
    path = Path(text)
    if path.suffix.lower() in FILE_SUFFIXES and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"names the folder the files are written into, and {text!r} reads as one file's name: give a folder, "
            f"e.g. {path.with_suffix('')}"
        )
    return text


def top_p(text: str) -> float:
    value = number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value
