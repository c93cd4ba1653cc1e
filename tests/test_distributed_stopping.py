"""Stopping a data-parallel run (`slmlab train --nproc 2`): Ctrl-C, SIGTERM to slmlab, or a signal to
one process alone stops every process at the end of the same step, with one checkpoint and one
line, and the run resumes exactly (training/stopping.py's StopVote)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
import torch.distributed as dist
from safetensors.torch import load_file

from .conftest import stop_once_training
from .test_distributed import losses, slmlab_train, tiny_setup

pytestmark = [
    pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="this PyTorch build has no gloo backend"),
    pytest.mark.distributed,
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The folder the tiny config (test_distributed.py) writes its runs to; nothing trained yet."""
    root = tmp_path_factory.mktemp("stopping")
    tiny_setup(root)
    return root / "runs"


@pytest.mark.parametrize("stop", ["Ctrl-C", "SIGTERM to slmlab"])
def test_a_stopped_data_parallel_run_ends_a_step_together_with_a_checkpoint_in_one_line(runs, stop):
    """Ctrl-C (SIGINT to the terminal's process group) printed torchrun's 20-line SignalException
    traceback after one "interrupted" line per process, and slmlab itself, interrupted, killed
    torchrun at once; a SIGTERM to slmlab alone ended it with no word. Then the processes stopped at
    once, losing every step since the last checkpoint; they now agree on a step and write it."""
    name = f"stopped_{stop.split()[0].replace('-', '')}"
    command = [sys.executable, "-m", "slmlab", "train", str(runs.parent / "tiny.toml"), "--nproc", "2", "--no-progress",
               "--name", name, "--train.steps", "100000", "--train.checkpoint_every", "1000"]  # fmt: skip
    process = stop_once_training(command, runs / name / "metrics.jsonl", "ctrl-c" if stop == "Ctrl-C" else "kill")
    stderr = process.stderr_text
    said = [line for line in stderr.splitlines() if line.startswith("slmlab:")]
    number = signal.SIGINT if stop == "Ctrl-C" else signal.SIGTERM
    assert process.returncode == 128 + number, stderr[-2000:]
    assert len(said) == 1 and "Traceback" not in stderr, stderr[-2000:]
    step = int((runs / name / "checkpoints" / "latest").read_text().removeprefix("step_"))
    assert json.loads((runs / name / "metrics.jsonl").read_text().splitlines()[-1])["step"] == step > 0
    assert said[0] == (
        f"slmlab: stopped by {number.name} at step {step}; checkpoint step_{step:06d} written in {runs / name}; "
        f"continue with: slmlab train --resume {runs / name} --nproc 2"
    )
    with contextlib.suppress(ProcessLookupError):  # every process of its session has ended
        os.killpg(process.pid, 0)
        pytest.fail("a process of the stopped run is still running")


STOPPER = """
import os
import signal
import torch
from torch import nn
from slmlab.registry import MLPS


class Stopper(nn.Module):
    \"\"\"The MLP slot as a gain; in process 1 alone, its STOP_AT-th training forward sends that
    process SIGINT (as `kill -INT` of one process would).\"\"\"

    def __init__(self, cfg):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        if self.training and os.environ.get("RANK") == "1" and "STOP_AT" in os.environ:
            type(self).calls = getattr(type(self), "calls", 0) + 1
            if type(self).calls == int(os.environ["STOP_AT"]):
                os.kill(os.getpid(), signal.SIGINT)
        return x * self.gain


MLPS.register("stopper_test", Stopper)
"""


def test_a_signal_to_one_process_stops_every_process_after_the_next_step_and_resumes_exactly(runs, monkeypatch):
    """One process stopping alone would leave the other waiting in its next collective: they vote at
    every step's end, and all stop one step after the first asked. The resumed run ends on the
    weights of one that never stopped."""
    root = runs.parent
    (root / "stopper.py").write_text(STOPPER)
    config = root / "stopper.toml"
    config.write_text(
        'plugins = ["stopper.py"]\n' + (root / "tiny.toml").read_text().replace("[model]\n", '[model]\nmlp = "stopper_test"\n')
    )
    slmlab_train(str(config), "--name", "unstopped", "--nproc", "2")
    monkeypatch.setenv("STOP_AT", "9")  # 2 micro-batches x 2 layers a step: the first forward of step 3
    stopped = subprocess.run(
        [sys.executable, "-m", "slmlab", "train", str(config), "--name", "stopped", "--nproc", "2", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    said = [line for line in stopped.stderr.splitlines() if line.startswith("slmlab:")]
    assert stopped.returncode == 130 and len(said) == 1, stopped.stderr[-3000:]
    assert said[0].startswith(f"slmlab: stopped by SIGINT at step 4; checkpoint step_000004 written in {runs / 'stopped'}")
    assert (runs / "stopped" / "checkpoints" / "latest").read_text() == "step_000004"
    monkeypatch.delenv("STOP_AT")
    assert said[0].endswith(f"continue with: slmlab train --resume {runs / 'stopped'} --nproc 2 --trust-plugins")
    slmlab_train("--resume", str(runs / "stopped"), "--nproc", "2", "--trust-plugins")
    assert losses(runs / "stopped") == losses(runs / "unstopped")
    unstopped, resumed = load_file(runs / "unstopped" / "final.safetensors"), load_file(runs / "stopped" / "final.safetensors")
    assert unstopped.keys() == resumed.keys() and all(unstopped[k].equal(resumed[k]) for k in unstopped)
