"""Sweeps on a Slurm cluster: the array script, one task run alone, quoting what sbatch would split."""

from __future__ import annotations

import json
import os

import pytest

from slmlab.cli import main


@pytest.mark.slow
def test_slurm_array_script_and_single_task_runs(micro_sweep, tmp_path, capsys):
    script = tmp_path / "sweep.sh"
    assert (
        main(
            [
                "sweep",
                str(micro_sweep),
                "--slurm",
                str(script),
                "--sbatch=--partition=gpu",
                "--sbatch=--time=00:30:00",
                "--train.steps",
                "4",
            ]
        )
        == 0
    )
    text = script.read_text()
    assert "#SBATCH --array=0-3" in text and "#SBATCH --partition=gpu" in text and "#SBATCH --gres=gpu:1" in text
    assert "#SBATCH --time=00:30:00" in text and "04:00:00" not in text
    assert f'slmlab sweep {micro_sweep} --train.steps 4 --only "$SLURM_ARRAY_TASK_ID"' in text
    assert "0=baseline_s1, 1=baseline_s2, 2=full_s1, 3=full_s2" in text
    capsys.readouterr()
    assert main(["sweep", str(micro_sweep), "--only", "2", "--train.steps", "4"]) == 0
    sweep_dir = tmp_path / "runs" / "micro"
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["full_s1", "slurm"]
    assert json.loads((sweep_dir / "full_s1" / "summary.json").read_text())["step"] == 4
    assert main(["sweep", str(micro_sweep), "--only", "4"]) == 2
    assert "--only 4: the sweep has runs 0..3" in capsys.readouterr().err


def test_a_slurm_script_quotes_what_sbatch_would_split(micro_sweep, tmp_path, capsys):
    """sbatch splits an #SBATCH line at whitespace outside double quotes: a sweep named "my sweep"
    named its job "my" and wrote its logs under "runs/my"; the submit line was not quotable either."""
    import shlex
    import subprocess

    micro_sweep.write_text(micro_sweep.read_text().replace('name = "micro"', 'name = "my sweep"'))
    script = tmp_path / "job script.sh"
    assert main(["sweep", str(micro_sweep), "--slurm", str(script)]) == 0
    assert f"submit it with `sbatch {shlex.quote(str(script))}`" in capsys.readouterr().out
    directives = dict(
        shlex.split(line)[1].split("=", 1) for line in script.read_text().splitlines() if line.startswith("#SBATCH")
    )
    assert directives["--job-name"] == "my sweep" and directives["--chdir"] == os.getcwd()  # as typed, wherever sbatch runs
    assert directives["--output"] == f"{tmp_path / 'runs' / 'my sweep' / 'slurm'}/%A_%a.out"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    micro_sweep.write_text(micro_sweep.read_text().replace('name = "my sweep"', 'name = "my \\"sweep\\""'))
    assert main(["sweep", str(micro_sweep), "--slurm", str(tmp_path / "other.sh")]) == 2
    assert "cannot go into an #SBATCH line (it holds a double quote)" in capsys.readouterr().err


def test_a_slurm_script_runs_its_tasks_where_it_was_written(micro_sweep, tmp_path, monkeypatch):
    """A relative config path, out_dir and data.source are read from the folder the script was
    written in: sbatch typed elsewhere ran the tasks there (no such config; SLURM could not open
    a relative log folder, and the task died without a log)."""
    import shlex

    micro_sweep.write_text(micro_sweep.read_text().replace(f'out_dir = "{tmp_path / "runs"}"', 'out_dir = "runs"'))
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", micro_sweep.name, "--slurm", "job.sh"]) == 0
    directives = dict(
        shlex.split(line)[1].split("=", 1)
        for line in (tmp_path / "job.sh").read_text().splitlines()
        if line.startswith("#SBATCH")
    )
    assert directives["--chdir"] == str(tmp_path)
    assert directives["--output"] == f"{tmp_path / 'runs' / 'micro' / 'slurm'}/%A_%a.out"
