"""What a training run shows while it trains: a tqdm bar on a terminal, or, without one (sweep
workers, --no-progress, output not a terminal), log lines with the step, loss, tokens/s and ETA:
one per evaluation (with the validation loss), and one per logging window whenever HEARTBEAT
seconds have passed since the last line, so a long stretch between evaluations is not silent.

The speed it shows is the median over the last (up to WINDOWS) logging windows, not one window's
(a window that met a checkpoint save or other work on the machine moves it little); the ETA is
the steps left times the median window's seconds per step."""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque

from tqdm.auto import tqdm

from ..phase_progress import clock

log = logging.getLogger("slmlab")
WINDOWS = 50
HEARTBEAT = 60.0  # seconds


class TrainingProgress:
    """The bar's figures are the last window's loss, the median tokens/s, and the validation loss
    once one has been measured (never `val=nan` before the first evaluation)."""

    def __init__(self, name: str, total_steps: int, done_steps: int, bar: bool, log_lines: bool, heartbeat: float = HEARTBEAT):
        self.name, self.total_steps, self.log_lines, self.heartbeat = name, total_steps, log_lines, heartbeat
        self.last_line = time.monotonic()
        self.bar = tqdm(total=total_steps, initial=done_steps, desc=name, disable=not bar, unit="step", dynamic_ncols=True)
        self.last_val: float | None = None
        self.rates: deque[float] = deque(maxlen=WINDOWS)  # tokens/s of the latest windows
        self.step_seconds: deque[float] = deque(maxlen=WINDOWS)

    def step(self) -> None:
        self.bar.update(1)

    def report(self, record: dict) -> None:
        """One logging window's record (metrics.jsonl's fields; no tokens_per_s and dt_ms when the
        window timed no step: the compiling one alone)."""
        if "tokens_per_s" in record:
            self.rates.append(record["tokens_per_s"])
            self.step_seconds.append(record["dt_ms"] / 1000)
        rate = f"{statistics.median(self.rates):,.0f}" if self.rates else "–"  # 20,288: as the final line
        timed = {0: "no step timed yet", 1: "one window"}.get(len(self.rates), f"median of {len(self.rates)} windows")
        figures = {"loss": f"{record['loss']:.3f}", "tok_s": rate}
        evaluated = "val_loss" in record
        if evaluated:
            self.last_val = record["val_loss"]
        if self.last_val is not None:
            figures["val"] = f"{self.last_val:.3f}"
        self.bar.set_postfix(figures)
        if self.log_lines and (evaluated or time.monotonic() - self.last_line >= self.heartbeat):
            eta = clock((self.total_steps - record["step"]) * statistics.median(self.step_seconds)) if self.step_seconds else "–"
            scores = f", val loss {record['val_loss']:.4f} ({record['val_bpb']:.4f} bits/byte)" if evaluated else ""
            log.info(
                "%s step %d/%d: loss %.4f%s, %s tokens/s (%s), ETA %s",
                self.name, record["step"], self.total_steps, record["loss"], scores, rate, timed, eta,
            )  # fmt: skip
            self.last_line = time.monotonic()

    def close(self) -> None:
        self.bar.close()
