"""Windows of token ids drawn from a split: seeded random training windows (resumable, mixed
over streams, sliced per data-parallel rank) and a fixed, evenly spaced validation sample."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from ..config.checks import check_whole_number
from ..phase_progress import tracked
from ..registry import closest
from ..tables import counted
from .corpora import CorpusError
from .corpora.local import say_once
from .tokens import TokenSplit


def check_counts(**counts: int) -> None:
    """Window sizes and counts are whole numbers >= 1 (a 0 made an empty sample, NaN loss)."""
    for name, value in counts.items():
        check_whole_number(name, value, 1)


def _gather(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows tokens[o : o + seq_len + 1] for every offset -> inputs x and targets y, both (B, seq_len)."""
    rows = np.asarray(tokens[offsets[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    batch = torch.from_numpy(rows)
    return batch[:, :-1], batch[:, 1:]


class WindowSampler:
    """Random windows of `seq_len + 1` tokens, seeded; `mixture` weights the streams.

    Without a mixture, window starts are uniform over the whole split. With one, each row first
    draws a stream with probability proportional to its weight, then a uniform start inside it.
    The generator's state is the sampler position (`state_dict`), so a resumed run continues with
    exactly the windows it would have drawn. `rows` keeps only some rows of each batch: a
    data-parallel rank draws the whole global batch (every rank's generator agrees) and gathers
    its own disjoint slice of it."""

    def __init__(
        self,
        split: TokenSplit,
        seq_len: int,
        batch_size: int,
        seed: int,
        mixture: dict[str, float] | None = None,
        rows: slice = slice(None),
    ):
        check_counts(seq_len=seq_len, batch_size=batch_size)
        self.split, self.seq_len, self.batch_size, self.rows = split, seq_len, batch_size, rows
        self.rng = np.random.Generator(np.random.PCG64(seed))
        if mixture:
            names = list(mixture)
            unknown = [n for n in names if n not in split.streams]
            if unknown:
                meant = closest(unknown[0], split.streams)  # j: 'J', a stream's name in another case
                raise CorpusError(
                    f"data.mixture: unknown {'stream' if len(unknown) == 1 else 'streams'} {unknown}{meant}; "
                    f"streams are {sorted(split.streams)}"
                )
            names = [n for n in names if mixture[n] > 0]
            weights = np.array([mixture[n] for n in names], dtype=np.float64)
        else:
            names, weights = ["*"], np.ones(1)
        ranges = [split.streams[n] if n != "*" else (0, len(split)) for n in names]
        for name, (start, end) in zip(names, ranges):
            if end - start < seq_len + 1:
                what = "the training split" if name == "*" else f"stream '{name}' of the training split"
                raise CorpusError(
                    f"{what} has {counted(end - start, 'tokens')}, fewer than data.seq_len + 1 = {seq_len + 1}; "
                    "lower data.seq_len or use more text"
                )
        self.names = names
        self.probs = weights / weights.sum()
        self.starts = np.array([r[0] for r in ranges], dtype=np.int64)
        self.spans = np.array([r[1] - r[0] - seq_len for r in ranges], dtype=np.int64)

    def next_offsets(self) -> np.ndarray:
        """Start offsets of the next batch's windows, (batch_size,)."""
        if len(self.names) > 1:
            stream = self.rng.choice(len(self.names), size=self.batch_size, p=self.probs)
        else:
            stream = np.zeros(self.batch_size, dtype=np.int64)
        return self.starts[stream] + self.rng.integers(0, self.spans[stream])

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _gather(self.split.tokens, self.next_offsets()[self.rows], self.seq_len)

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def validation_batches(
    split: TokenSplit,
    seq_len: int,
    batch_size: int,
    n_batches: int,
    length_setting: str = "data.seq_len",
    progress: str = "",
    disjoint: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed validation sample: up to n_batches * batch_size evenly spaced windows (`disjoint`:
    only as many as share no token, in batches of one size; validation_offsets). `length_setting`:
    the setting that chose seq_len, named by the error when the split is too short; `progress`: a
    label to show the batches done under (PhaseProgress; none when empty)."""
    check_counts(seq_len=seq_len, batch_size=batch_size, n_batches=n_batches)
    offsets, rows = _sample(len(split), seq_len, batch_size, n_batches, length_setting, disjoint)
    starts = range(0, len(offsets), rows)
    for i in tracked(starts, progress, len(starts), "batches"):
        yield _gather(split.tokens, offsets[i : i + rows], seq_len)


def validation_offsets(
    length: int, seq_len: int, batch_size: int, n_batches: int, length_setting: str = "data.seq_len", disjoint: bool = False
) -> np.ndarray:
    """Where the fixed validation sample's windows start in a split of `length` tokens: up to
    n_batches * batch_size evenly spaced starts, each distinct (fewer where the split is short).
    `disjoint`: no more than the split holds without overlap (last // seq_len + 1), for figures
    whose intervals treat the windows or batches as independent: a short split's windows would
    each share most tokens with their neighbours (a token scored ~8 times), and the intervals came
    out that much too narrow. A split that holds the asked windows apart gets the same ones."""
    return _sample(length, seq_len, batch_size, n_batches, length_setting, disjoint)[0]


def _sample(
    length: int, seq_len: int, batch_size: int, n_batches: int, length_setting: str, disjoint: bool
) -> tuple[np.ndarray, int]:
    """(validation_offsets' starts, the windows a batch). A disjoint sample shorter than asked is cut
    to whole batches of one size, the size up to batch_size that keeps the most windows (the
    largest of those): paired intervals and t-tests over its batches weigh each batch alike, where
    a last batch of 3 windows beside ones of 12 counted as much as each of them."""
    last = length - seq_len - 1
    if last < 0:
        raise CorpusError(
            f"the validation split has {counted(length, 'tokens')}, fewer than {length_setting} + 1 = {seq_len + 1}; "
            f"raise data.val_fraction or lower {length_setting}"
        )
    asked = n_batches * batch_size
    count, rows = (min(asked, last // seq_len + 1) if disjoint else min(asked, last + 1)), batch_size
    if count < asked and disjoint:
        fit = count
        rows = max(range(1, min(batch_size, fit) + 1), key=lambda r: (fit // r * r, r))
        count = fit // rows * rows
        say_once(
            logging.INFO,
            f"the validation split's {counted(length, 'tokens')} hold {counted(fit, 'windows')} of {seq_len} apart, fewer "
            f"than the {asked} asked: {count} scored without overlap, in {counted(count // rows, 'batches')} of {rows}, "
            "so that the intervals count no token twice and weigh every batch alike",
        )
    return np.unique(np.linspace(0, last, count).astype(np.int64)), rows


def check_windows(split_train: TokenSplit, split_val: TokenSplit, seq_len: int, batch_size: int, mixture: dict) -> None:
    """Raise the CorpusError training would raise later: the mixture names known streams, every
    stream it samples holds a window, the validation split holds one."""
    WindowSampler(split_train, seq_len, batch_size, seed=0, mixture=mixture or None)
    next(validation_batches(split_val, seq_len, batch_size, 1))
