"""Did a run train on the text it is scored on? (`slmlab eval RUN --text FILE`, and each run of
`slmlab eval SWEEP --text FILE`.)

A text's score is meant for text the run has not seen; a file copied out of the training corpus
(a document, or a passage of one) scores optimistically, and in a sweep it favours whichever
variant memorised more. So up to PASSAGES passages of PASSAGE characters, evenly spaced through
the text, are looked for in the run's training split (data/split.py's TrainingSide: its training
documents, or the first 1 − val_fraction of a corpus split by position). A text shorter than
MIN_TEXT characters is not looked for: a phrase that short occurs in any large corpus.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..config import DataConfig
from ..data.corpora import CorpusError, DocumentSelection
from ..data.split import TrainingSide
from ..tables import counted

log = logging.getLogger("slmlab")

PASSAGE = 200
PASSAGES = 8
MIN_TEXT = 64


@dataclass(frozen=True)
class TrainedPassages:
    """How many of the passages looked for (`looked`) occur in the training split (`found`)."""

    found: int
    looked: int

    def describe(self) -> str:
        return f"{self.found} of its {counted(self.looked, 'passages')} found in the run's training split"


def passages_of(text: str, size: int = PASSAGE, count: int = PASSAGES) -> list[str]:
    """Up to `count` distinct passages of `size` characters (the whole text where it is shorter),
    their starts evenly spaced from the text's start to its end."""
    size = min(size, len(text))
    last = len(text) - size
    starts = sorted({round(last * k / max(1, count - 1)) for k in range(count)})
    return list(dict.fromkeys(text[start : start + size] for start in starts))


def trained_passages(data: DataConfig, text: str) -> TrainedPassages | None:
    """The passages of `text` that occur in the training split of the run trained on `data`; None
    where the text is too short to tell, or the run's corpus cannot be read (a warning says so)."""
    if len(text) < MIN_TEXT:
        return None
    wanted = set(passages_of(text))
    looked = len(wanted)
    try:
        for training in TrainingSide(DocumentSelection(data), data.val_fraction).texts():
            wanted -= {passage for passage in wanted if passage in training}
            if not wanted:
                break
    except CorpusError as err:  # the run's own corpus moved, or is relative to another folder
        log.warning("not looked for in the run's training text: its corpus cannot be read (%s)", err)
        return None
    return TrainedPassages(looked - len(wanted), looked)
