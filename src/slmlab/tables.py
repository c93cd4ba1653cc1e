"""Presentation: plain Markdown tables (readable in a terminal, pasteable into a README or an issue),
text quoted so that nothing in it is read as Markdown or HTML, and the formatting of numbers and
sizes."""

from __future__ import annotations

import math
import re
import shlex
import unicodedata
from collections.abc import Sequence


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def code_block(text: str, language: str = "") -> str:
    """`text` as a fenced Markdown code block whose fence is longer than any run of backticks in
    it, so nothing in the text (a model's sample holding ``` and HTML) ends the block early and
    reaches the HTML report as markup."""
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def code_span(text: str) -> str:
    """`text` on one line as an inline Markdown code span (newlines shown as ⏎), quoted like
    `code_block`."""
    text = text.replace("\n", "⏎")
    ticks = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "~": "&#126;", "|": "&#124;"}


def plain_text(text: str) -> str:
    """`text` on one line as literal Markdown text (a heading's or a paragraph's): newlines shown as
    ⏎, the characters that start emphasis, code, links or a heading's closing # escaped with a
    backslash, and those of HTML, strikethrough and tables written as entities (read alike by
    CommonMark and Python-Markdown)."""
    text = re.sub(r"([\\`*_\[\]#!])", r"\\\1", re.sub(r"\r\n|\r|\n", "⏎", text))
    return re.sub(r"[<>&~|]", lambda match: ENTITIES[match.group()], text)


def command_line(*words: object) -> str:
    """A command as a shell reads it back: each word quoted where it needs it (a path with a space,
    an apostrophe), so a command slmlab prints or records can be pasted as it stands."""
    return shlex.join(str(word) for word in words)


def format_number(value, spec: str, unit: str = "") -> str:
    """format(value, spec) + unit, or "–" for a missing (None) or NaN value (an inf is "inf")."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec) + unit


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as a Markdown table with columns padded to equal width; a cell's "|" is escaped
    and its line breaks become spaces (a variant named "a|b" shifted every later column)."""
    cells = [[_cell(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c + " " * (w - display_width(c)) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def display_width(text: str) -> int:
    """The columns a terminal gives `text`: 2 for an East Asian wide or fullwidth character (CJK,
    most emoji), 0 for a combining mark, else 1 (padding by len() misaligned a variant named 'héllo
    🚀' or a sweep named in Japanese)."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cell(value: object) -> str:
    return " ".join(str(value).replace("|", "\\|").splitlines())


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M', up to E (1e18: a GPU run's training FLOPs pass 1e15, which read
    '25000.00T'); with unit 'B' binary prefixes (KiB, MiB, ... PiB)."""
    if unit == "B":
        for prefix in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
            if abs(n) < 1024 or prefix == "PiB":
                return f"{n:.1f} {prefix}" if prefix != "B" else f"{int(n)} B"
            n /= 1024
    for prefix, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{prefix}"
    return f"{n:.0f}"


def counted(count: int, things: str) -> str:
    """'1 document', '1,200 documents', '1 entry', '1 batch': `count` with the plural noun `things`
    (regular, in -ies, or in -es after a sibilant: -ches, -shes, -sses, -xes), singular for one."""
    if things.endswith("ies"):
        singular = things[:-3] + "y"
    elif things.endswith(("ches", "shes", "sses", "xes")):
        singular = things[:-2]
    else:
        singular = things.removesuffix("s")
    return f"{count:,} {singular if count == 1 else things}"
