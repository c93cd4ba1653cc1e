"""A run's relative data paths, read from the folder it was trained in.

A run records `data.source` and `data.cache_dir` as they were typed, so a relative one names a path
from the working directory `slmlab train` ran in. That folder is known from the run itself: the run
lies at <folder>/<out_dir>/<name> whenever its recorded out_dir is relative (a sweep's runs at
<folder>/runs/<sweep>/<variant>_s<seed>, a curriculum's phases one level further down). A later
command run from anywhere else (`slmlab eval ~/project/runs/x` from the home folder, a report
written from the sweep's folder) reads the same files.

The training folder's path wins when it exists there: it is the one the run trained on, where the
working directory may hold another corpus of the same name. When it does not (the run was copied
without its data), the path is read as typed, from the working directory. Either way, the commands
that score a run on its corpus check the corpus' fingerprint against the one it trained on.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path

from ..config import RunConfig
from ..data.corpora import BUILTINS


def training_folder(cfg: RunConfig, run_path: Path) -> Path | None:
    """The working directory `run_path`'s run was trained from: its path less `out_dir`/`name`
    (None when out_dir is absolute, climbs out with "..", or the run no longer lies under them)."""
    out_dir = Path(os.path.normpath(Path(cfg.out_dir).expanduser()))
    if out_dir.is_absolute() or ".." in out_dir.parts:
        return None
    below = [part for part in (*out_dir.parts, cfg.name) if part != "."]
    here = Path(run_path).resolve()
    if len(here.parts) <= len(below) or list(here.parts[-len(below) :]) != below:
        return None  # a run folder renamed or moved out of its out_dir: its folder is unknown
    return Path(*here.parts[: -len(below)])


def _exists(path: Path) -> bool:
    """Whether a data.source path names something: a file, a folder or a glob that matches."""
    return path.exists() or (any(ch in str(path) for ch in "*?[") and bool(glob.glob(str(path))))


def _from(folder: Path, value: str, is_source: bool) -> str:
    """`value` (a data.source or cache_dir) as a path from `folder` when it is relative, names
    no built-in corpus, and exists there under another path than from the working directory."""
    if not value or (is_source and value in BUILTINS):
        return value
    typed = Path(value).expanduser()
    if typed.is_absolute():
        return value
    there = folder / typed
    if not _exists(there) or (_exists(typed) and os.path.realpath(typed) == os.path.realpath(there)):
        return value  # only from the working directory, or the same files from both
    return str(there)


def located(cfg: RunConfig, run_path: Path) -> RunConfig:
    """`cfg` (the run's recorded config) with its relative data.source and data.cache_dir read from
    the folder it was trained in (see the module's docstring); unchanged when that is the working
    directory or unknown."""
    folder = training_folder(cfg, run_path)
    if folder is None:
        return cfg
    data = dataclasses.replace(
        cfg.data, source=_from(folder, cfg.data.source, True), cache_dir=_from(folder, cfg.data.cache_dir, False)
    )
    return cfg if data == cfg.data else dataclasses.replace(cfg, data=data)
