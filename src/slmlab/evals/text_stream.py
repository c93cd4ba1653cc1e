"""Text as it is generated: a token stream decoded piece by piece, equal in the end to decoding
the whole sequence at once.

A token need not end on a character: a byte-level tokenizer spells "😀" in four tokens, and the
first three decode to U+FFFD (the replacement character) alone. So the stream decodes the ids since
its last flush point, writes what is new, and holds back while the text ends in U+FFFD (bytes of
a character still to come, or a replacement the next token will not change). A flush point is a
place where the text is whole: after a newline, or once 64 ids have gathered (bounding the work
per token on long lines). The held-back text is written by `close()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..data.tokenizers import Tokenizer

FLUSH_AFTER_IDS = 64
REPLACEMENT = "\ufffd"


class TextStream:
    """push(ids) as tokens come, close() at the end: `write` receives the text of every id pushed,
    in order, and the pieces join to tokenizer.decode(all ids)."""

    def __init__(self, tokenizer: Tokenizer, write: Callable[[str], object]):
        self.tokenizer, self.write = tokenizer, write
        self.ids: list[int] = []  # the ids since the last flush point
        self.written = 0  # characters of their text already written

    def push(self, ids: Iterable[int]) -> None:
        self.ids.extend(int(i) for i in ids)
        text = self.tokenizer.decode(self.ids)
        if text.endswith(REPLACEMENT):
            return
        self._write(text)
        if text.endswith("\n") or len(self.ids) >= FLUSH_AFTER_IDS:
            self.ids, self.written = [], 0

    def close(self) -> None:
        """Write what was held back (a final replacement character, say)."""
        self._write(self.tokenizer.decode(self.ids))
        self.ids, self.written = [], 0

    def _write(self, text: str) -> None:
        if len(text) > self.written:
            self.write(text[self.written :])
            self.written = len(text)
