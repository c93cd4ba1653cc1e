"""A run's relative data paths, read from the folder it was trained in.

A run records `data.source` and `data.cache_dir` as they were typed, so a relative one names a path
from the working directory `slmlab train` ran in. That folder is known from the run itself: the run
lies at <folder>/<out_dir>/<name> whenever its recorded out_dir is relative (a sweep's runs at
<folder>/runs/<sweep>/<variant>_s<seed>, a curriculum's phases one level further down). A later
command run from anywhere else (`slmlab eval ~/project/runs/x` from the home folder, a report
written from the sweep's folder) reads the same files.

A path found from the working directory is read from there, as typed (as it always was: a run
moved with its corpus, or scored from the folder it trained in); only one not found there is
looked for in the training folder. Either way, the commands that score a run on its own split
check that the corpus gives the token streams it trained on (their SHA-256s in summary.json).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path

from ..config import RunConfig
from ..data.corpora import BUILTINS
from ..tables import command_line


def training_folder(cfg: RunConfig, run_path: Path) -> Path | None:
    """The working directory `run_path`'s run was trained from: its path less `out_dir`/`name`
    (None when out_dir is absolute, climbs out with "..", or the run no longer lies under them)."""
    out_dir = Path(os.path.normpath(Path(cfg.out_dir).expanduser()))
    if out_dir.is_absolute() or ".." in out_dir.parts:
        return None
    below = [part for part in (*out_dir.parts, cfg.name) if part != "."]
    for here in dict.fromkeys(Path(path) for path in (os.path.abspath(run_path), os.path.realpath(run_path))):
        if len(here.parts) > len(below) and list(here.parts[-len(below) :]) == below:
            return Path(*here.parts[: -len(below)])  # as given (a runs folder that is a link), else resolved
    return None  # a run folder renamed or moved out of its out_dir: its folder is unknown


def _exists(path: Path) -> bool:
    """Whether a data.source path names something: a file, a folder or a glob that matches."""
    return path.exists() or (any(ch in str(path) for ch in "*?[") and bool(glob.glob(str(path))))


def _relative(value: str, is_source: bool) -> Path | None:
    """`value` (a data.source or cache_dir) as a relative path; None where it is empty, names a
    built-in corpus or is absolute."""
    typed = Path(value).expanduser()
    return None if not value or (is_source and value in BUILTINS) or typed.is_absolute() else typed


def _from(folder: Path, value: str, is_source: bool) -> str:
    """`value` as a path from `folder` when it is relative, is not found from the working
    directory and is found from `folder`."""
    typed = _relative(value, is_source)
    if typed is None or _exists(typed) or not _exists(folder / typed):
        return value
    return str(folder / typed)


def located(cfg: RunConfig, run_path: Path) -> RunConfig:
    """`cfg` (the run's recorded config) with its relative data.source and data.cache_dir read from
    the folder it was trained in where the working directory has no such path (see the module's
    docstring); unchanged when they are found from here, or that folder is unknown."""
    folder = training_folder(cfg, run_path)
    if folder is None:
        return cfg
    data = dataclasses.replace(
        cfg.data, source=_from(folder, cfg.data.source, True), cache_dir=_from(folder, cfg.data.cache_dir, False)
    )
    return cfg if data == cfg.data else dataclasses.replace(cfg, data=data)


def trained_from_hint(cfg: RunConfig, run_path: Path) -> str:
    """For a run whose relative data.source, read from the working directory, is not the text it
    trained on: where the folder it was trained in holds a path of that name, say so ("" else)."""
    folder, typed = training_folder(cfg, run_path), _relative(cfg.data.source, True)
    if folder is None or typed is None or not _exists(folder / typed) or os.path.realpath(folder) == os.path.realpath(Path.cwd()):
        return ""
    return f"; the folder it was trained in has its own: give --data.source {command_line(folder / typed)} or run from {folder}"
