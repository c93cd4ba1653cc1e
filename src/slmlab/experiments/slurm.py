"""A sweep on a cluster: a SLURM job array whose task i runs the sweep's job i alone
(`slmlab sweep CONFIG --only i`); the same command without --only then writes the results table."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..files import atomic_write_text, check_replaceable
from ..tables import command_line, counted
from .sweep_config import Job, SweepConfig

SCRIPT_START = "#!/bin/bash\n#SBATCH --job-name="  # a script slmlab wrote starts so: --slurm may replace it


def write_slurm_script(
    path: Path, config_path: str | Path, sweep: SweepConfig, jobs: list[Job], extra_argv: list[str], directives: list[str]
) -> str:
    """Write the job-array script (and the log folder SLURM will not create) -> a line on what to do."""
    check_replaceable(path, "--slurm", "a SLURM script slmlab wrote", lambda text: text.startswith(SCRIPT_START))
    slurm_log_dir(sweep).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, slurm_script(config_path, sweep, jobs, extra_argv, directives))
    return f"wrote {path}: submit it with `{command_line('sbatch', path)}` ({len(jobs)} array tasks)"


def directive_value(value: str) -> str:
    """A value as an #SBATCH line needs it: sbatch splits the line at whitespace outside double
    quotes, so a sweep named "s w" would name its job "s" (and its log folder "runs/s")."""
    if '"' in value:
        raise ConfigError(f"{value!r} cannot go into an #SBATCH line (it holds a double quote); rename it")
    return f'"{value}"' if any(c.isspace() for c in value) else value


def slurm_log_dir(sweep: SweepConfig) -> Path:
    return Path(sweep.out_dir) / sweep.name / "slurm"


def slurm_script(
    config_path: str | Path, sweep: SweepConfig, jobs: list[Job], extra_argv: list[str], directives: list[str]
) -> str:
    """A bash script for `sbatch`: one array task per (variant, seed), one GPU each by default.

    `directives` are extra `#SBATCH` options ("--partition=gpu", "--time=04:00:00") and replace the
    defaults of the same name. The tasks run in the folder the script was written from (--chdir),
    where the config, the runs and a relative data.source were found, wherever `sbatch` is typed;
    the logs go to an absolute path. SLURM does not create the log folder: the caller makes it."""
    defaults = {"--chdir": directive_value(os.getcwd()), "--gres": "gpu:1", "--cpus-per-task": "8", "--time": "04:00:00"}
    given = {d.split("=", 1)[0]: d for d in (d if d.startswith("--") else f"--{d}" for d in directives)}
    options = [f"{k}={v}" for k, v in defaults.items() if k not in given] + list(given.values())
    logs = slurm_log_dir(sweep).absolute()
    command = command_line("slmlab", "sweep", config_path, *extra_argv) + ' --only "$SLURM_ARRAY_TASK_ID"'
    lines = [
        f"{SCRIPT_START}{directive_value(sweep.name)}",
        f"#SBATCH --array=0-{len(jobs) - 1}",
        f"#SBATCH --output={directive_value(f'{logs}/%A_%a.out')}",
        *(f"#SBATCH {option}" for option in options),
        f"# {counted(len(jobs), 'runs')}: " + ", ".join(f"{i}={job.variant}_s{job.seed}" for i, job in enumerate(jobs)),
        f"# afterwards: {command_line('slmlab', 'sweep', config_path, *extra_argv)}   (writes the results table)",
        "set -euo pipefail",
        command,
        "",
    ]
    return "\n".join(lines)
