"""Figures as files: matplotlib without a display, each PNG written whole or not at all.

plt = pyplot()
fig, ax = plt.subplots()
...
save_png(fig, path, dpi=120)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from .files import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend, which needs no display (imported on first use: it
    takes about half a second, which verbs that draw nothing should not pay)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, dpi: int, **options) -> Path:
    """Write `fig` to `path` as a PNG (atomically: a reader never sees half an image), then close it;
    `options`: more keyword arguments of Figure.savefig."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, **options))
    pyplot().close(fig)
    return path


def loss_axis(ax, losses: Iterable[float | None]) -> None:
    """Put the losses an Axes shows on a log y-axis where they span more than a factor of 30: a
    diverged run or learning rate (a loss of 1e5 beside 1.5) otherwise flattens every other line
    onto 0. Ordinary curves (a loss falling from ln V to a third of it) keep a linear axis."""
    positive = [x for x in losses if x is not None and math.isfinite(x) and x > 0]
    if positive and max(positive) > 30 * min(positive):
        ax.set_yscale("log")
