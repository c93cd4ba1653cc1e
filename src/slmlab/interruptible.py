"""Long calls into native code that Ctrl-C and SIGTERM can still stop.

Python runs a signal's handler in the main thread between bytecodes, so while the main thread is
inside one long native call (the Rust BPE trainer over a large corpus: minutes) Ctrl-C did
nothing, and slmlab's own SIGTERM handler (training/stopping.py), which replaces the default
action, kept the process alive until the call returned (56 s for one test corpus). `interruptible`
makes the call in a daemon thread and waits for it in the main thread, which handles a signal at
once: what the handler raises (KeyboardInterrupt) propagates, and the thread, left behind, ends
with the process. The call must release the GIL to gain anything (Hugging Face tokenizers' training
does) and must not need the main thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
WAIT_SECONDS = 0.1  # how often the waiting main thread wakes (a signal also wakes it)


def interruptible(call: Callable[[], T], waiting: Callable[[], object] | None = None) -> T:
    """call()'s value, or what it raised, with signals handled while it runs (module docstring);
    `waiting` is called each time the main thread wakes (every WAIT_SECONDS: a progress line
    that is due). Off the main thread (no signal is handled there anyway) it is called directly."""
    if threading.current_thread() is not threading.main_thread():
        return call()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller's thread as it is
            outcome["error"] = error

    worker = threading.Thread(target=run, name="slmlab-native-call", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(WAIT_SECONDS)
        if waiting is not None:
            waiting()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
