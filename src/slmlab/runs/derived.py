"""Which weights each file derived from a run was computed with: RUN/derived.json.

`ablate`, `quantize`, `eval` (long-context plots), `prompts`, `persona-eval` and `viz attention`
write their results into the run directory. A run can train on afterwards (`train --resume RUN
--train.steps N`), or they may have read a checkpoint of an unfinished run; their files then
describe weights the run no longer has. Each writer records the SHA-256 of the weights it loaded
(runs/run_dir.model_weights) against the files it wrote, and the report flags a file whose weights
differ from the run's current ones, naming the command that rewrites it:

    {"files": {"ablations.md": {"weights": "<sha256>", "command": "slmlab ablate RUN"}, ...}}

Files with no record (written before this record existed) are shown as they are.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import CheckpointError, RunFileError
from ..files import atomic_write_text, json_text, read_json, sha256_file
from ..locks import DirectoryLock
from .run_dir import model_run, model_weights

RECORD = "derived.json"
log = logging.getLogger("slmlab")


def weights_identity(run_path: str | Path, checkpoint: str | None = None) -> str:
    """SHA-256 of the weights `load_run(run_path, checkpoint=...)` loads (the recorded one;
    computed where none was)."""
    path, sha256 = model_weights(model_run(run_path)[0], checkpoint)
    return sha256 or sha256_file(path)


def _read(run_path: Path) -> dict:
    record = read_json(run_path / RECORD, "record of derived files", RunFileError, f"delete {run_path / RECORD}")
    files = record.get("files")
    return files if isinstance(files, dict) else {}


def record_derived(run_path: str | Path, files: list[Path], command: str, weights: str) -> None:
    """Record that `files` were computed from the weights whose SHA-256 is `weights`
    (weights_identity, taken before the command loaded them), by `command`. Files written outside
    the run directory (--out elsewhere) are not recorded."""
    run_path = Path(run_path)
    inside = [Path(f).resolve() for f in files if Path(f).resolve().is_relative_to(run_path.resolve())]
    names = [f.relative_to(run_path.resolve()).as_posix() for f in inside]
    if not names:
        return
    # RUN/.derived.lock: commands that write into one run may run side by side
    with DirectoryLock(run_path / "derived", "record of derived files", wait=True):
        try:
            entries = _read(run_path) if (run_path / RECORD).exists() else {}
        except RunFileError as err:  # the command's own results are written: start the record afresh
            log.warning("%s; writing a new one", str(err).rsplit(";", 1)[0])
            entries = {}
        entries.update({name: {"weights": weights, "command": command} for name in names})
        atomic_write_text(run_path / RECORD, json_text({"files": entries}, indent=2) + "\n")


def out_of_date(run_path: str | Path) -> dict[str, str]:
    """{file (relative to the run): the command that rewrites it} for every recorded file computed
    from other weights than the run's current ones; {} without a record or without weights."""
    run_path = Path(run_path)
    if not (run_path / RECORD).is_file():
        return {}
    try:
        current = weights_identity(run_path)
    except CheckpointError:  # no weights left to compare with
        return {}
    return {
        name: str(entry.get("command", "the command that wrote it"))
        for name, entry in _read(run_path).items()
        if isinstance(entry, dict) and entry.get("weights") not in (None, current)
    }
