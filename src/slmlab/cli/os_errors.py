"""One line for an operating-system error that reaches the command line: which path could not be
read or written, why in words, and what to change (permissions, another path, free space).

Python's own text ("[Errno 13] Permission denied: 'runs/.a.lock'") names neither whether slmlab
was reading or writing nor the folder at fault; the checks here ask the file system again (the
error has happened: nothing is retried)."""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Sequence
from pathlib import Path

from ..files import is_run_folder


def os_error_message(err: OSError, outputs: Sequence[str] = ()) -> str:
    """`err` as one line without the errno prefix, saying what to do; `outputs`: the arguments with
    which the command's user chooses where it writes (`output_arguments`). Errors without a path
    keep Python's text."""
    if err.filename is None:
        return str(err)
    path = Path(os.fsdecode(err.filename))
    reason = (err.strerror or "").lower()
    if err.errno in (errno.EACCES, errno.EPERM):
        return _denied(path, outputs)
    if err.errno == errno.EROFS:
        return f"cannot write {path}: its file system is read-only; {_elsewhere(path, outputs)}"
    if err.errno == errno.ENOSPC:
        return f"cannot write {path}: no space left on its disk; free some space or {_elsewhere(path, outputs)}"
    if err.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"{path}: {reason} (a file stands where a folder is needed); {_elsewhere(path, outputs)}"
    if err.errno == errno.EISDIR:
        return f"{path} is a folder where a file is needed: name a file"
    if err.errno == errno.ENAMETOOLONG:
        return f"{path}: the name is too long for the file system; choose a shorter name or path"
    if err.errno == errno.ENOENT:
        return f"{path}: no such file or folder; check the path"
    return f"{path}: {reason or err}"


def _denied(path: Path, outputs: Sequence[str]) -> str:
    """A permission error on `path`: reading it, writing it, or making or removing an entry in a
    folder this user may not change."""
    closed = next((p for p in reversed(path.parents) if os.path.isdir(p) and not os.access(p, os.X_OK)), None)
    if closed is not None:
        return f"cannot reach {path}: this user may not enter the folder {closed}; change its permissions (chmod, chown)"
    if os.path.exists(path) and not os.access(path, os.R_OK):
        return f"cannot read {path}: permission denied for this user; change its permissions (chmod, chown) or use a copy you can read"
    fix = "change its permissions (chmod, chown) or " + _elsewhere(path, outputs)
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        return f"cannot write in the folder {path}: permission denied for this user; {fix}"
    if os.path.isfile(path) and not os.access(path, os.W_OK):
        return f"cannot write {path}: permission denied for this user; {fix}"
    folder = next((p for p in path.parents if os.path.exists(p)), Path("."))
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write {path}: the folder {folder} is not writable for this user; {fix}"
    return f"{path}: permission denied for this user; {fix}"


def output_arguments(args: argparse.Namespace) -> list[str]:
    """The arguments of the verb `args` ran with that choose where it writes: --out, export's OUT,
    --out_dir for the verbs that take config overrides, and a sweep's --slurm script or its own
    out_dir (which its command line may not set)."""
    if args.verb_name == "sweep":
        return ["--slurm"] if args.slurm else ["out_dir in the sweep's config"]
    options = {option for action in args.verb_parser._actions for option in action.option_strings}
    positional = [action.metavar for action in args.verb_parser._actions if not action.option_strings and action.dest == "out"]
    return ["--out"] * ("--out" in options) + positional + ["--out_dir"] * (args.takes_overrides is True)


def _elsewhere(path: Path, outputs: Sequence[str]) -> str:
    """Where else slmlab could write what it could not write at `path`: the variable or the
    arguments that choose it."""
    from ..data.corpora.fetch import cache_locations

    absolute = Path(os.path.abspath(path))
    for cache in (Path(os.path.abspath(location)) for location in cache_locations()):
        if absolute.is_relative_to(cache) or cache.is_relative_to(absolute):  # in a cache, or a folder on its way
            return "set SLMLAB_CACHE (or data.cache_dir) to a folder you can write"
    run = next((folder for folder in absolute.parents if is_run_folder(folder)), None)
    if run is not None and "--out" not in outputs:
        return f"copy the run {run} to a folder you can write and give the copy"
    if outputs:
        return f"give another {' or '.join(outputs)}"
    return "run it where it can write"
