"""`slmlab train --nproc N` runs torchrun through this module (`python -m slmlab.training.launch
TORCHRUN_ARGS...`): torchrun's own launcher, with its report of failed processes cut to one line
each. A process that stopped on slmlab's own error has printed it in one line and exited with 2;
torchrun added its agent's log line and a 40-line traceback ending in ChildFailedError, which
said nothing more. Any other failure (a crash, a signal: the OOM killer) gets one line naming
the process, its exit code and its signal. Processes that stopped on a signal at a step's end,
together (training/stopping.py), are no failure: rank 0 has said where."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from ..torchrun_env import RANK_ERRORS

SLMLAB_ERROR = 2  # the exit code of `slmlab` after printing a one-line error (cli/main.py)
STOPPED = {128 + signal.SIGINT, 128 + signal.SIGTERM}  # the exit codes of training stopped at a step's end (stopping.py)


def main(argv: list[str]) -> int:
    """Run torchrun with `argv`; the processes' one-line errors go to a folder (RANK_ERRORS) from
    which rank 0's is printed by rank 0, and another rank's here where it differs."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.elastic.agent.server.api").setLevel(logging.ERROR)  # "Received 2 death signal"
    with tempfile.TemporaryDirectory(prefix="slmlab-ranks-") as folder:
        os.environ[RANK_ERRORS] = folder
        args = parse_args(argv)
        try:
            run(args)
        except ChildFailedError as err:
            return _report(err.failures, _lines_said(folder))
        except SignalException as err:  # torchrun passed the signal on to its processes
            if err.sigval != signal.SIGINT and 0 not in _lines_said(folder):  # else rank 0 said what stopped
                name = signal.Signals(err.sigval).name
                again = f"slmlab train --resume RUN --nproc {args.nproc_per_node}"
                print(f"slmlab: stopped by {name} (a run that wrote a checkpoint continues with {again})", file=sys.stderr)
            return 128 + int(err.sigval)
    return 0


def _lines_said(folder: str) -> dict[int, str]:
    """rank -> the one line that process printed for the launcher (torchrun_env.report_error)."""
    return {int(p.stem): p.read_text(encoding="utf-8") for p in Path(folder).glob("*.txt")}


def _report(failures: dict, errors: dict[int, str]) -> int:
    """Print what rank 0 has not: another rank's one-line error where it differs from rank 0's
    (rank 0's own where it printed none), and one line per process that failed otherwise; a
    process torchrun stopped (SIGTERM) after another's error is no failure of its own."""
    exits = {f.exitcode for f in failures.values()} - {-signal.SIGTERM}  # torchrun stops the others after a first exit
    if len(exits) == 1 and exits <= STOPPED and 0 in errors:  # the processes stopped on a signal at one step,
        return exits.pop()  # and rank 0 said where
    errored = any(f.exitcode == SLMLAB_ERROR for f in failures.values())
    shown = {errors[0]} if 0 in errors else set()
    for rank, failure in sorted(failures.items()):
        if failure.exitcode == SLMLAB_ERROR:
            message = errors.get(rank)
            if message is not None and message not in shown:
                label = f"slmlab: error (process {rank}):" if shown else "slmlab: error:"
                print(message.replace("slmlab: error:", label, 1), file=sys.stderr)
                shown.add(message)
        elif not (errored and failure.exitcode == -signal.SIGTERM):
            name = f" ({failure.signal_name()})" if failure.exitcode < 0 else ""
            print(f"slmlab: error: training process {rank} exited with code {failure.exitcode}{name}", file=sys.stderr)
    codes = {f.exitcode for f in failures.values()} - {-signal.SIGTERM}
    return SLMLAB_ERROR if codes == {SLMLAB_ERROR} else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
