"""Ctrl-C (SIGINT) or SIGTERM (a cluster's notice before it preempts a job) during `slmlab train`
or `slmlab sweep` ends the step under way, writes a checkpoint at it and stops, instead of losing
every step since the last checkpoint (train.checkpoint_every, 500 by default). A second signal
stops at once.

The CLI installs the handlers (`stop_at_step_end`), and so does each sweep worker around its run;
the trainer arms them while it trains (`armed`: `Trainer.fit`, from the first step to the written
results; a stop asked for after the last step lets the run finish). Before that (reading the
corpus, building the model) a signal interrupts at once, as without them. A sweep passes a stop on
to its workers with FORWARDED, which only asks (they may have had the Ctrl-C already).

Under torchrun (`slmlab train --nproc N`) the processes must stop at the same step: a signal may
reach one of them only, or each in another step, and one that stopped alone would leave the others
waiting in their next collective. `StopVote` makes them agree, one step after the first asked.
torchrun passes every signal it gets on to the processes, which a terminal's Ctrl-C reached
already: a signal within TORCHRUN_ECHO seconds of the first is taken for that copy and only asks.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator

import torch
import torch.distributed as dist

from ..torchrun_env import process_rank, world_size

log = logging.getLogger("slmlab")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
FORWARDED = signal.SIGUSR1  # a sweep passes a stop on to its workers with it: it asks, and never stops at once
TORCHRUN_ECHO = 2.0  # seconds after a first signal in which torchrun's copy of it comes (it comes in milliseconds)
_requested: list[str] = []  # the name of the signal that asked for a stop, once one did
_asked_at: list[float] = []  # when it did (time.monotonic)
_armed: list[bool] = []  # non-empty while a trainer trains


class TrainingStopped(Exception):
    """Training stopped on a signal after writing the checkpoint `checkpoint` of run `run`."""

    def __init__(self, signal_name: str, step: int, run, checkpoint: str):
        self.signal_name, self.step, self.run, self.checkpoint = signal_name, step, run, checkpoint
        by = "the sweep" if signal_name == FORWARDED.name else signal_name
        super().__init__(f"stopped by {by} at step {step}; checkpoint {checkpoint} written in {run}")

    @property
    def exit_code(self) -> int:
        return exit_code(self.signal_name)


def exit_code(signal_name: str) -> int:
    """The shell's code for a process ended by the signal `signal_name` ("SIGINT"): 128 + its number."""
    return 128 + signal.Signals[signal_name].value


def requested() -> str | None:
    """The signal that asked training to stop (e.g. "SIGINT"), or None."""
    return _requested[0] if _requested else None


@contextlib.contextmanager
def stop_at_step_end() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM while `armed` only ask training to stop (`requested`); a
    second one (under torchrun: one more than TORCHRUN_ECHO seconds after the first), or one while
    not armed, raises KeyboardInterrupt at once. FORWARDED (SIGUSR1) asks as the first does,
    however often it comes. Does nothing off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    echo = TORCHRUN_ECHO if world_size() > 1 else 0.0
    previous = {number: signal.getsignal(number) for number in SIGNALS}
    previous = {number: handler for number, handler in previous.items() if handler is not signal.SIG_IGN}

    def ask(number, frame):
        if not _armed or (_requested and time.monotonic() - _asked_at[0] >= echo):
            raise KeyboardInterrupt
        if not _requested:
            _asked(
                number, f"{signal.Signals(number).name}: stopping after this step with a checkpoint (once more to stop at once)"
            )

    def ask_once(number, frame):
        if not _armed:
            raise KeyboardInterrupt
        if not _requested:
            _asked(number, "the sweep is stopping: this run ends its step with a checkpoint")

    for number in previous:  # a signal ignored by who started us (`slmlab train ... &` in a script) stays ignored
        signal.signal(number, ask)
    previous[FORWARDED] = signal.signal(FORWARDED, ask_once)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _requested.clear()
        _asked_at.clear()


def _asked(number: int, message: str) -> None:
    """Record the stop signal `number` asked for, and say so (under torchrun, rank 0 alone)."""
    _requested.append(signal.Signals(number).name)
    _asked_at.append(time.monotonic())
    if process_rank() == 0:
        log.warning("%s", message)


@contextlib.contextmanager
def armed() -> Iterator[None]:
    """While inside (a trainer's fit), a signal caught by `stop_at_step_end` asks for a stop at the
    end of the step rather than interrupting."""
    _armed.append(True)
    try:
        yield
    finally:
        _armed.clear()


class StopVote:
    """Whether training stops at the end of this step: the same answer in every process.

    One process: the signal `requested` as soon as one asked. Several (torchrun): each step's end
    starts a non-blocking all-reduce (MAX) of the signal asked for in this process (0: none) over
    a gloo group of its own (CPU tensors: no GPU sync, no place in the model's collectives), and
    reads the one the step before started. Every process stops at the end of the step after the
    first request, together, under the same signal (the highest number asked for)."""

    def __init__(self, distributed: bool):
        self.group = dist.new_group(backend="gloo") if distributed else None
        self.ballot: torch.Tensor | None = None
        self.pending = None

    def __call__(self) -> str | None:
        """The name of the signal training stops on at this step's end, or None. Under torchrun
        every process calls it at every step's end (a collective)."""
        if self.group is None:
            return requested()
        agreed = 0
        if self.pending is not None:
            self.pending.wait()
            agreed = int(self.ballot.item())
        asked = requested()
        self.ballot = torch.tensor([signal.Signals[asked].value if asked else 0], dtype=torch.int64)
        self.pending = dist.all_reduce(self.ballot, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        return signal.Signals(agreed).name if agreed else None

    def close(self) -> None:
        """Wait for the last vote and leave the group (every process, at the same step)."""
        if self.pending is not None:
            self.pending.wait()
            self.pending = None
        if self.group is not None:
            dist.destroy_process_group(self.group)
            self.group = None
