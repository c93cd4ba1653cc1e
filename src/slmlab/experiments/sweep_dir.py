"""Reading a sweep's folder once it has run: its results.json (the sweep's name, its baseline, its
variants) and its run folders by variant and seed (`<variant>_s<seed>`), for the verbs that read
a sweep after the fact (`report`, `eval --text`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import RunFileError
from ..files import read_json, require_fields
from ..runs.run_dir import RunDir

FIX = "run `slmlab sweep` on its config again to rewrite it (finished runs are kept)"


@dataclass
class SweepRuns:
    """A sweep folder: `runs` every run folder in it, `by_variant` variant -> seed -> run, in the
    order results.json lists the variants."""

    name: str
    baseline: str
    runs: list[RunDir]
    by_variant: dict[str, dict[int, RunDir]]


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / "results.json").is_file()


def read_sweep_dir(path: Path) -> SweepRuns:
    """The sweep in `path`; a missing or damaged results.json is a RunFileError naming it."""
    where = Path(path) / "results.json"
    results = read_json(where, "sweep results", RunFileError, FIX)
    require_fields(results, {"sweep": str, "baseline": str, "variants": list}, where, "sweep results", RunFileError, FIX)
    if not all(isinstance(r, dict) and isinstance(r.get("variant"), str) for r in results["variants"]):
        raise RunFileError(f"sweep results {where} is damaged (a variant record without its name); {FIX}")
    runs = [RunDir(d) for d in sorted(Path(path).iterdir()) if (d / "config.json").is_file()]
    by_variant: dict[str, dict[int, RunDir]] = {}
    for record in results["variants"]:
        prefix = f"{record['variant']}_s"
        by_variant[record["variant"]] = {
            int(r.path.name[len(prefix) :]): r
            for r in runs
            if r.path.name.startswith(prefix) and r.path.name[len(prefix) :].isdigit()
        }
    return SweepRuns(results["sweep"], results["baseline"], runs, by_variant)
