"""`slmlab train --nproc N`'s launcher (training/launch.py): a failure is one line, not torchrun's
traceback, and the same error from every process is printed once."""

from __future__ import annotations

import contextlib
import io
import signal


def test_processes_of_one_training_hand_their_errors_to_the_launcher(tmp_path, monkeypatch, capsys):
    """Under `slmlab train --nproc`, rank 0 prints its one-line error and every rank writes its own
    to the launcher's folder, which prints another rank's only where it differs."""
    from slmlab.torchrun_env import RANK_ERRORS, report_error

    monkeypatch.setenv(RANK_ERRORS, str(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        report_error(f"slmlab: error: from {rank}")
    assert capsys.readouterr().err == "slmlab: error: from 0\n"
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "0.txt": "slmlab: error: from 0",
        "1.txt": "slmlab: error: from 1",
    }
    monkeypatch.delenv(RANK_ERRORS)
    report_error("slmlab: error: alone")
    assert capsys.readouterr().err == "slmlab: error: alone\n"


def test_the_launcher_prints_what_rank_0_did_not():
    """Rank 0 printed its own line: another rank's is printed only where it differs; a rank with
    no line of its own that torchrun stopped (SIGTERM) after the error is no failure; a crash is
    one line naming the process, its exit code and its signal; processes that stopped together on
    a signal are no failure."""
    from types import SimpleNamespace

    from slmlab.training.launch import _report

    def failed(code):
        return SimpleNamespace(exitcode=code, signal_name=lambda: signal.Signals(-code).name)

    same, other = "slmlab: error: too few tokens", "slmlab: error: out of memory"
    stopped = "slmlab: stopped by SIGINT at step 4; checkpoint step_000004 written in runs/x; continue with: ..."
    cases = [
        ({0: failed(2), 1: failed(2)}, {0: same, 1: same}, 2, ""),
        ({0: failed(-15), 1: failed(2)}, {1: same}, 2, same + "\n"),
        ({0: failed(2), 1: failed(2)}, {0: same, 1: other}, 2, "slmlab: error (process 1): out of memory\n"),
        ({0: failed(-15), 1: failed(-9)}, {}, 1, "slmlab: error: training process 0 exited with code -15 (SIGTERM)\n"
         "slmlab: error: training process 1 exited with code -9 (SIGKILL)\n"),
        # stopped by a signal at one step (training/stopping.py), rank 0 having said where; torchrun
        # may stop a process that has not exited yet with SIGTERM
        ({0: failed(130), 1: failed(130)}, {0: stopped}, 130, ""),
        ({0: failed(143), 1: failed(-15)}, {0: stopped}, 143, ""),
        ({0: failed(130), 1: failed(130)}, {}, 1, "slmlab: error: training process 0 exited with code 130\n"
         "slmlab: error: training process 1 exited with code 130\n"),
    ]  # fmt: skip
    for failures, errors, code, printed in cases:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            assert _report(failures, errors) == code
        assert err.getvalue() == printed


def test_a_signal_to_torchrun_before_rank_0_said_anything_names_the_resume_with_its_processes(monkeypatch, capsys):
    """torchrun stopped by a signal (passed on to its processes) that rank 0 did not report: the
    launcher's line named `--resume RUN` without the `--nproc N` the run needs."""
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from slmlab.training.launch import main

    def stopped(args):
        raise SignalException("stopped", sigval=signal.SIGTERM)

    monkeypatch.setattr(torchrun, "run", stopped)
    assert main(["--standalone", "--nproc_per_node=3", "-m", "slmlab", "train", "x.toml"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == (
        "slmlab: stopped by SIGTERM (a run that wrote a checkpoint continues with slmlab train --resume RUN --nproc 3)\n"
    )


def as_torchrun_process(monkeypatch, rank: int, local_rank: int) -> None:
    """The environment torchrun gives one process of a distributed run (WORLD_SIZE 2)."""
    env = {"WORLD_SIZE": 2, "RANK": rank, "LOCAL_RANK": local_rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 29999}
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))


def test_more_processes_than_gpus_is_one_line_naming_the_fix(monkeypatch):
    """`--nproc 2` on a machine with one GPU: the second process asked CUDA for device 1 and died
    in a traceback ("invalid device ordinal", seen on an H200 machine)."""
    import pytest
    import torch

    from slmlab.config import ConfigError
    from slmlab.training import distributed

    as_torchrun_process(monkeypatch, rank=1, local_rank=1)
    monkeypatch.setattr(distributed, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"process 1 of this machine has no GPU of its own: it has 1 CUDA device; .*--nproc"):
        distributed.World.from_env("auto")


def test_nccl_is_bound_to_the_process_gpu(monkeypatch):
    """Without device_id NCCL guessed each process's GPU from its global rank, which torch warns
    can hang where ranks and GPUs do not line up (its warning, seen on an H200 under --nproc 1)."""
    import torch

    from slmlab.training import distributed

    as_torchrun_process(monkeypatch, rank=3, local_rank=1)
    joined = {}
    monkeypatch.setattr(distributed, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda backend, **kwargs: joined.update(backend=backend, **kwargs)
    )
    world, device = distributed.World.from_env("auto")
    assert (world.rank, world.local_rank, device) == (3, 1, torch.device("cuda", 1))
    assert joined["backend"] == "nccl" and joined["device_id"] == torch.device("cuda", 1)
