"""Sweep workers: they die with a killed parent, and one killed from outside (the OOM killer's
SIGKILL) is one line naming its run, never a BrokenProcessPool traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit may wait for a reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _endless_sweep(tmp_path: Path, micro_toml: Path, name: str, **popen) -> subprocess.Popen:
    """Start `slmlab sweep` of one run that would train for 100,000 steps; return once it trains."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        f'name = "{name}"\nout_dir = "{tmp_path / "runs"}"\nbase = "{micro_toml}"\nseeds = [0]\n[overrides]\n"train.steps" = 100000\n[variants.a]\n'
    )
    parent = subprocess.Popen([sys.executable, "-m", "slmlab", "sweep", str(sweep)], **popen)
    deadline = time.time() + 120
    while not (tmp_path / "runs" / name / "a_s0" / "metrics.jsonl").exists():  # a worker is training
        if time.time() > deadline or parent.poll() is not None:
            parent.kill()
            pytest.fail(f"the sweep's worker did not start training (exit status {parent.poll()})")
        time.sleep(0.2)
    return parent


def _children(pid: int) -> list[Path]:
    """/proc/<child> of each child of process pid."""
    return [stat.parent for stat in Path("/proc").glob("[0-9]*/stat") if _parent_of(stat) == pid]


def _parent_of(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.slow
def test_sweep_workers_die_with_a_killed_parent(tmp_path, micro_toml):
    parent = _endless_sweep(tmp_path, micro_toml, "orphans", stderr=subprocess.DEVNULL)
    workers = [int(child.name) for child in _children(parent.pid)]
    try:
        assert workers
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 20
        while any(_running(pid) for pid in workers):
            assert time.time() < deadline, "a sweep worker outlived its parent"
            time.sleep(0.2)
    finally:  # never leave a process behind, whatever failed
        for pid in [parent.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.wait()


@pytest.mark.slow
def test_a_sweep_worker_killed_from_outside_is_one_line_naming_the_run(tmp_path, micro_toml):
    """The OOM killer's SIGKILL of a worker broke the process pool: a BrokenProcessPool traceback."""
    parent = _endless_sweep(tmp_path, micro_toml, "oom", stderr=subprocess.PIPE, text=True)
    try:
        children = _children(parent.pid)
        (worker,) = [int(c.name) for c in children if b"spawn_main" in (c / "cmdline").read_bytes()]  # not the resource tracker
        os.kill(worker, signal.SIGKILL)
        _, err = parent.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            parent.kill()
    assert parent.returncode == 2
    line = next(line for line in err.splitlines() if line.startswith("slmlab: error:"))
    assert f"a sweep worker was killed from outside (out of memory?) while training {tmp_path / 'runs' / 'oom' / 'a_s0'}" in line
    assert "Traceback" not in err
