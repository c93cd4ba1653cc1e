"""Figures as files: matplotlib without a display, each PNG written whole or not at all.

plt = pyplot()
fig, ax = plt.subplots()
...
save_png(fig, path, dpi=120)
"""

from __future__ import annotations

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
