"""Ctrl-C (SIGINT) or SIGTERM (a cluster's notice before it preempts a job) during `slmlab train`
or `slmlab sweep` ends the step under way, writes a checkpoint at it and stops, instead of losing
every step since the last checkpoint (train.checkpoint_every, 500 by default). A second signal
stops at once.

The CLI installs the handlers (`stop_at_step_end`), and so does each sweep worker around its run;
the trainer arms them while it trains (`armed`: `Trainer.fit`, from the first step to the written
results; a stop asked for after the last step lets the run finish). Before that (reading the
corpus, building the model) a signal interrupts at once, as without them. A sweep passes a stop on
to its workers with FORWARDED, which only asks (they may have had the Ctrl-C already). Under
torchrun the ranks would have to agree on the step, so they keep the default (the run resumes from
its last checkpoint).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from ..torchrun_env import world_size

log = logging.getLogger("slmlab")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
FORWARDED = signal.SIGUSR1  # a sweep passes a stop on to its workers with it: it asks, and never stops at once
_requested: list[str] = []  # the name of the signal that asked for a stop, once one did
_armed: list[bool] = []  # non-empty while a trainer trains


class TrainingStopped(Exception):
    """Training stopped on a signal after writing the checkpoint `checkpoint` of run `run`."""

    def __init__(self, signal_name: str, step: int, run, checkpoint: str):
        self.signal_name, self.step, self.run, self.checkpoint = signal_name, step, run, checkpoint
        by = "the sweep" if signal_name == FORWARDED.name else signal_name
        super().__init__(f"stopped by {by} at step {step}; checkpoint {checkpoint} written in {run}")

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal: 128 + its number."""
        return 128 + signal.Signals[self.signal_name].value


def requested() -> str | None:
    """The signal that asked training to stop (e.g. "SIGINT"), or None."""
    return _requested[0] if _requested else None


@contextlib.contextmanager
def stop_at_step_end() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM while `armed` only ask training to stop (`requested`); a
    second one, or one while not armed, raises KeyboardInterrupt at once.
    FORWARDED (SIGUSR1) asks as the first does, however often it comes. Does nothing off the main
    thread or under torchrun."""
    if threading.current_thread() is not threading.main_thread() or world_size() > 1:
        yield
        return
    previous = {number: signal.getsignal(number) for number in SIGNALS}
    previous = {number: handler for number, handler in previous.items() if handler is not signal.SIG_IGN}

    def ask(number, frame):
        if _requested or not _armed:
            raise KeyboardInterrupt
        _requested.append(signal.Signals(number).name)
        log.warning("%s: stopping after this step with a checkpoint (once more to stop at once)", _requested[0])

    def ask_once(number, frame):
        if not _armed:
            raise KeyboardInterrupt
        if not _requested:
            _requested.append(signal.Signals(number).name)
            log.warning("the sweep is stopping: this run ends its step with a checkpoint")

    for number in previous:  # a signal ignored by who started us (`slmlab train ... &` in a script) stays ignored
        signal.signal(number, ask)
    previous[FORWARDED] = signal.signal(FORWARDED, ask_once)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _requested.clear()


@contextlib.contextmanager
def armed() -> Iterator[None]:
    """While inside (a trainer's fit), a signal caught by `stop_at_step_end` asks for a stop at the
    end of the step rather than interrupting."""
    _armed.append(True)
    try:
        yield
    finally:
        _armed.clear()
