"""Long texts cut where GPT-2's pre-tokenizer cuts anyway, so byte-level BPE reads them piece by
piece with bounded memory and the same ids.

A Hugging Face `Encoding` keeps ~400 bytes per token (ids, offsets, token strings, masks): one
20 MB document, encoded whole, took 3.7 GB. GPT-2's pattern (`tokenizers.GPT2_PATTERN`, also the
pre-tokenizer of slmlab's trained BPE),

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

splits text into pre-tokens that BPE encodes one by one. It has no look-behind, and its one
look-ahead, in `\\s+(?!\\S)`, ends runs of white space. So a cut between two characters is exact
(the pre-tokens of the two sides are those of the whole) when no pre-token holds both and the left
one is not white space. Two kinds of cut are:

- before a single space between two non-white-space characters: the left character ends a run of
  letters, digits or punctuation (no class of those holds white space), and the space starts the
  next pre-token (` ?\\p{L}+`, ` ?\\p{N}+`, ` ?[^\\s\\p{L}\\p{N}]+`);
- between a letter or digit and a character that is none of letter, digit, white space: no class
  holds both, and only the contractions (`'s`, ...) join punctuation to letters, so the apostrophe
  is never cut beside. This is what cuts text without spaces, Chinese or Japanese at its commas
  and full stops, Hindi between letters and vowel signs.

Python's `\\w` less `_` is exactly Unicode's letters and digits (categories L*, N*), but in the
Unicode version of Python's own tables: a character unassigned there (a CJK ideograph of a newer
version) may be a letter to the tokenizer, so the second kind never cuts beside one. Encoding the
pieces separately gives exactly the ids of the whole (tests/test_pieces.py checks it against
encoding whole, on adversarial text of several scripts), and training BPE on the pieces counts the
same pre-tokens.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator

import numpy as np

PIECE_CHARS = 1 << 16
BATCH_CHARS = 1 << 20
TRAINING_RUN_CHARS = 1024
# a contraction ('s, 'll, ...: its own pre-token, before the letters after it), else a long run of
# letters, digits, other non-space characters or white space
_LONG_RUN = r"(?P<contraction>'(?:[sdmt]|ll|ve|re))|[^\W\d_]{{{n},}}|\d{{{n},}}|(?:[^\w\s]|_){{{n},}}|\s{{{n},}}"
# Python's \S is narrower than Unicode's non-White_Space, [^\W_] is L* and N*: both safe
_CUT = re.compile(r"(?<=\S) (?=\S)|(?<=[^\W_])(?=[^\w\s'])|(?<=[^\w\s'])(?=[^\W_])")


def _cut_at(text: str, start: int) -> int | None:
    """The first exact cut at or after `start` (module docstring), or None."""
    for cut in _CUT.finditer(text, start):
        at = cut.start()
        if text[at] == " " or "Cn" not in (unicodedata.category(text[at - 1]), unicodedata.category(text[at])):
            return at
    return None


def gpt2_pieces(text: str, size: int | None = None) -> Iterator[str]:
    """`text` cut into pieces of at least `size` (default PIECE_CHARS) characters, the last may be
    shorter, each cut at the first exact cut (module docstring) at or after `size` characters; a
    text with none there stays whole. Yielded one at a time (each is a copy of its characters);
    "".join(pieces) == text."""
    size = size or PIECE_CHARS
    start = 0
    while len(text) - start > size:
        cut = _cut_at(text, start + size)
        if cut is None:
            break
        yield text[start:cut]
        start = cut
    yield text[start:]


def all_pieces(texts: Iterable[str]) -> Iterator[str]:
    """Every text's `gpt2_pieces`, in order, each run of one class too long to train on cut
    (`trainable_pieces`): what a BPE trainer reads instead of whole texts."""
    for text in texts:
        for piece in gpt2_pieces(text):
            yield from trainable_pieces(piece)


def trainable_pieces(piece: str, longest: int = TRAINING_RUN_CHARS) -> Iterator[str]:
    """`piece`, cut every `longest` characters inside each run of more than `longest` letters,
    digits, other non-space characters or white space (a genome, a base64 blob, a rule of 5,000
    '=': one pre-token each): Hugging Face's BPE trainer scans a pre-token once per merge it takes
    part in, so its time grows faster than the square of the longest one (one word of 400,000
    characters: 110 s for 1,000 tokens; a 5 MB genome did not finish in 15 minutes), while cut
    into pieces it counts the same pairs less one per cut. Only training reads these cuts
    (encoding stays exact, `encode_in_pieces`); text without such runs (the longest in the Brown
    corpus is 47 characters) is read as it is."""
    if not (re.search(rf"\s{{{longest + 1}}}", piece) or any(len(word) > longest for word in piece.split())):
        yield piece  # the usual case, checked at C speed: no long run at all
        return
    start = 0
    for run in re.finditer(_LONG_RUN.format(n=longest + 1), piece):
        if run.lastgroup == "contraction":
            continue
        for cut in range(run.start() + longest, run.end(), longest):
            yield piece[start:cut]
            start = cut
    yield piece[start:]


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
