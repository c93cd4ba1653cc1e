"""A .json file that holds one array of records, read an item at a time: `json.loads` of the whole
file held its text and every record at once (a 2 GB export took several times that in memory).

`array_items` reads READ_CHARS characters at a time and parses each item with
`json.JSONDecoder.raw_decode` where it starts; an item cut by the end of what was read is parsed
again once more is read (twice as much where it is long, so a long item costs a few parses, not
one per read). A number is taken only once a character that cannot go on it follows, and an item
that fails well before the end of what was read (all but an unterminated string) fails at once:
a damaged record early in a 2 GB file is not read to its end. The items, and the errors (message,
line and column), are those of `json.loads` of the whole text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TextIO

from ...files import json_object_pairs, lone_surrogate
from .fetch import CorpusError

READ_CHARS = 1 << 22
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's white space
_NUMBER = frozenset("0123456789.eE+-")
_LONGEST_TOKEN = 16  # characters: a literal cut by a read (-Infinity) fails no further back than this


def array_items(handle: TextIO, where: str, read_chars: int = READ_CHARS) -> Iterator[object]:
    """Each item of the JSON array `handle` holds, in order; text that is not one array (or an item
    that holds a lone surrogate escape) is a CorpusError naming `where`, the line and the column."""
    decoder = json.JSONDecoder(object_pairs_hook=json_object_pairs)
    text, pos, done = "", 0, False
    dropped, lines, line_start = 0, 1, 0  # characters read and dropped, the lines they began, where the last began

    def read_more() -> None:
        nonlocal text, pos, done, dropped, lines, line_start
        lines += text.count("\n", 0, pos)
        if (newline := text.rfind("\n", 0, pos)) >= 0:
            line_start = dropped + newline + 1
        part = handle.read(max(read_chars, len(text) - pos))
        done = not part
        text, pos, dropped = text[pos:] + part, 0, dropped + pos

    def next_char() -> str:
        """The next character that is not white space ("" at the end), read up to."""
        nonlocal pos
        while True:
            pos = _SPACE.match(text, pos).end()
            if pos < len(text) or done:
                return text[pos : pos + 1]
            read_more()

    def place(at: int) -> str:
        """'line L, column C' of `text[at]` in the whole text."""
        newline = text.rfind("\n", 0, at)
        column = at - newline if newline >= 0 else dropped + at - line_start + 1
        line = lines + text.count("\n", 0, at)
        return f"line {line}, column {column}"

    def fail(message: str, at: int) -> None:
        raise CorpusError(f"{where}: not JSON ({message} at {place(at)})")

    if next_char() != "[":
        fail("Expecting '['", pos)
    pos += 1
    if next_char() == "]":
        pos += 1
    else:
        while True:
            next_char()
            while True:
                try:
                    value, end = decoder.raw_decode(text, pos)
                    if done or (end < len(text) and text[end] not in _NUMBER):  # a number may go on
                        break
                except json.JSONDecodeError as err:  # more text cannot mend what fails well before its end
                    if done or (err.pos < len(text) - _LONGEST_TOKEN and not err.msg.startswith("Unterminated string")):
                        fail(err.msg, err.pos)
                read_more()
            if text.find("\\u", pos, end) >= 0 and (bad := lone_surrogate(value)):
                raise CorpusError(f"{where}: the item at {place(pos)} holds {bad}, half of a UTF-16 pair and no character")
            pos = end
            yield value
            following = next_char()
            if following not in (",", "]"):
                fail("Expecting ',' delimiter", pos)
            pos += 1
            if following == "]":
                break
    if next_char():
        fail("Extra data", pos)
