"""Presentation: plain Markdown tables (readable in a terminal, pasteable into a README or an issue)
and the formatting of numbers and sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence


def format_number(value, spec: str) -> str:
    """format(value, spec), or "–" for a missing (None) or NaN value."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as a Markdown table with columns padded to equal width."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'; with unit 'B' uses binary prefixes (KiB, MiB, GiB)."""
    if unit == "B":
        for prefix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(n) < 1024 or prefix == "TiB":
                return f"{n:.1f} {prefix}" if prefix != "B" else f"{int(n)} B"
            n /= 1024
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{prefix}"
    return f"{n:.0f}"
