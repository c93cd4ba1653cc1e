"""Long texts cut where GPT-2's pre-tokenizer cuts anyway, so byte-level BPE reads them piece by
piece with bounded memory and the same ids.

A Hugging Face `Encoding` keeps ~400 bytes per token (ids, offsets, token strings, masks): one
20 MB document, encoded whole, took 3.7 GB. GPT-2's pattern (`tokenizers.GPT2_PATTERN`, also the
pre-tokenizer of slmlab's trained BPE) splits text into pre-tokens that BPE encodes one by one,
and it never joins a character before a single space with the space when both neighbours of that
space are non-white-space: the character ends a run of letters, digits or punctuation (no class
of those holds white space), the space starts the next pre-token (` ?\\p{L}+`, ` ?\\p{N}+`,
` ?[^\\s\\p{L}\\p{N}]+`), and the pattern has no look-behind. No match that ends at or before the
space looks past it: the one look-ahead, in `\\s+(?!\\S)`, ends runs of white space, and the
space's left neighbour is none. So encoding the text on either side of such a space separately
gives exactly the ids of the whole (tests/test_pieces.py checks it against encoding whole, on
adversarial text), and training BPE on the pieces counts the same pre-tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

import numpy as np

PIECE_CHARS = 1 << 16
BATCH_CHARS = 1 << 20
_CUT = re.compile(r"(?<=\S) (?=\S)")  # Python's \S is narrower than Unicode's non-White_Space: safe


def gpt2_pieces(text: str, size: int | None = None) -> Iterator[str]:
    """`text` cut into pieces of at least `size` (default PIECE_CHARS) characters, the last may be
    shorter, each cut just before the first single space between two non-white-space characters
    at or after `size` characters; a text with no such space there stays whole. Yielded one at a
    time (each is a copy of its characters); "".join(pieces) == text."""
    size = size or PIECE_CHARS
    start = 0
    while len(text) - start > size:
        cut = _CUT.search(text, start + size)
        if cut is None:
            break
        yield text[start : cut.start()]
        start = cut.start()
    yield text[start:]


def all_pieces(texts: Iterable[str]) -> Iterator[str]:
    """Every text's `gpt2_pieces`, in order (what a BPE trainer reads instead of whole texts)."""
    for text in texts:
        yield from gpt2_pieces(text)


def encode_in_pieces(encode_batch: Callable[[list[str]], list[list[int]]], texts: list[str], dtype: np.dtype) -> list[np.ndarray]:
    """`encode_batch` (a GPT-2-pattern byte-level BPE's) applied to the texts' pieces, cut as they
    are needed, about BATCH_CHARS characters a call (each call's encodings are alive together)
    -> each text's ids as a (n_tokens,) `dtype` array, equal to encoding it whole."""
    parts: list[list[np.ndarray]] = [[] for _ in texts]
    batch: list[str] = []
    owners: list[int] = []
    chars = 0

    def encode() -> None:
        for owner, ids in zip(owners, encode_batch(batch)):
            parts[owner].append(np.asarray(ids, dtype=dtype))

    for index, text in enumerate(texts):
        for piece in gpt2_pieces(text):
            batch.append(piece)
            owners.append(index)
            chars += len(piece)
            if chars >= BATCH_CHARS:
                encode()
                batch, owners, chars = [], [], 0
    if batch:
        encode()
    return [part[0] if len(part) == 1 else np.concatenate(part) for part in parts]
