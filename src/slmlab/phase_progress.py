"""Progress of a long phase outside the training loop (tokenizing a corpus, scoring validation
batches, one evaluation per ablation): a tqdm bar on a terminal; without one (output piped to a
file, a sweep worker) or with `bar=False`, one log line every `heartbeat` seconds with the count
done, the rate and the ETA, so a phase of minutes is never silent. A phase that ends within one
heartbeat prints no line."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

from .tables import counted

log = logging.getLogger("slmlab")
PHASE_HEARTBEAT = 20.0  # seconds between log lines when no bar is shown
T = TypeVar("T")


def clock(seconds: float) -> str:
    """Seconds as H:MM:SS, hours past 24 included (30 h -> "30:00:00")."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class PhaseProgress:
    """`total` units of work, `unit` their plural name, under the label `desc` (an empty label
    shows nothing).
    `bar`: True / False, or None for a bar only when stderr is a terminal. Use as a context
    manager, calling `update(n)` as units finish."""

    def __init__(self, desc: str, total: int | None, unit: str, bar: bool | None = None, heartbeat: float | None = None):
        self.desc, self.total, self.unit = desc, total, unit
        self.heartbeat = PHASE_HEARTBEAT if heartbeat is None else heartbeat  # read when made: tests set it to 0
        show = bool(desc) and (sys.stderr.isatty() if bar is None else bar)
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not show, leave=False, dynamic_ncols=True)
        self.log_lines = bool(desc) and not show
        self.done = 0
        self.started = self.last_line = time.monotonic()

    def set_total(self, total: int | None) -> None:
        """The total, once it is known (counting it may itself take a pass over the data)."""
        self.total = self.bar.total = total
        self.bar.refresh()

    def update(self, n: float = 1) -> None:
        """`n` more units done; a fraction for a unit done in parts (a long document's pieces),
        whose parts add up to a whole count again."""
        self.done += n
        if not isinstance(self.done, int) and abs(self.done - round(self.done)) < 1e-9:
            self.done = round(self.done)
        self.bar.update(n)
        self.bar.n = self.done
        self._say(self.line)

    def parts(self, pieces: Iterable[str], whole: int) -> Iterator[str]:
        """`pieces` of one unit's text of `whole` characters, each counted done as its share of the
        unit once the next is asked for (a long document read in parts; the shares add up to one)."""
        for piece in pieces:
            yield piece
            self.update(len(piece) / whole if whole else 1)

    def tick(self) -> None:
        """For whoever waits on work that counts nothing for a while (the BPE trainer's merges
        after its last document): a line if one is due, saying so once the count is complete, or
        the bar's clock refreshed."""
        if not self.log_lines:
            self.bar.refresh()
        else:
            self._say(self.still_working if self.total and self.done >= self.total else self.line)

    def _say(self, line) -> None:
        """Log `line(elapsed)` where log lines are shown and a heartbeat has passed since the last."""
        now = time.monotonic()
        if self.log_lines and now - self.last_line >= self.heartbeat:
            self.last_line = now
            log.info("%s", line(now - self.started))

    def still_working(self, elapsed: float) -> str:
        """'<desc>: all 600 documents done, still working (0:01:20 so far)'."""
        return f"{self.desc}: all {counted(self.total, self.unit)} done, still working ({clock(elapsed)} so far)"

    def line(self, elapsed: float) -> str:
        """'<desc>: 120/600 documents (20%), 3.1 documents/s, ETA 0:02:35' (no share or ETA
        without a total)."""
        rate = self.done / elapsed if elapsed > 0 else 0.0
        speed = f"{rate:,.1f}" if rate >= 1 else f"{rate:.2g}"
        done = f"{self.done:,}" if isinstance(self.done, int) else f"{self.done:,.2f}"  # a long document in parts
        if not self.total:
            return f"{self.desc}: {done} {self.unit}, {speed} {self.unit}/s"
        eta = clock((self.total - self.done) / rate) if rate > 0 else "–"
        share = self.done / self.total
        return f"{self.desc}: {done}/{self.total:,} {self.unit} ({share:.0%}), {speed} {self.unit}/s, ETA {eta}"

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tracked(items: Iterable[T], label: str, total: int | None, unit: str, bar: bool | None = None) -> Iterator[T]:
    """`items`, each counted done once the next is asked for, under PhaseProgress(label, total,
    unit, bar)."""
    with PhaseProgress(label, total, unit, bar) as progress:
        for item in items:
            yield item
            progress.update()
