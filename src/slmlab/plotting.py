"""Figures as files: matplotlib without a display, each PNG written whole or not at all.

plt = pyplot()
fig, ax = plt.subplots()
...
save_png(fig, path, dpi=120)

Text in a script matplotlib's own font (DejaVu Sans) lacks (a variant named in Japanese, the tokens
of a Chinese corpus on an attention map) is drawn with an installed font that has it, where there is
one (FALLBACK_FONTS); a character no font draws shows as a box, and instead of matplotlib's warning
per character and per drawing, one line names the figure and the characters.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Iterable
from pathlib import Path

from .files import atomic_write

log = logging.getLogger("slmlab")
GLYPH_MISSING = r"Glyph \d+ .* missing from font"
FALLBACK_FONTS = (  # tried in turn for a character DejaVu Sans lacks, where installed
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK KR",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "Noto Sans",
    "Noto Color Emoji",
    "Symbola",
    "Unifont",
)


def pyplot():
    """matplotlib.pyplot on the Agg backend, which needs no display (imported on first use: it
    takes about half a second, which verbs that draw nothing should not pay), with the installed
    FALLBACK_FONTS after DejaVu Sans, and matplotlib's missing-glyph warnings left to save_png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _use_fallback_fonts()
    warnings.filterwarnings("ignore", message=GLYPH_MISSING, category=UserWarning)  # save_png names them once
    return plt


@functools.cache
def _use_fallback_fonts() -> None:
    """Once per process: DejaVu Sans, then the installed FALLBACK_FONTS, as matplotlib's fonts."""
    import matplotlib
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", *(name for name in FALLBACK_FONTS if name in installed)]
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # "Failed to find font weight normal for ..."


def save_png(fig, path: Path, dpi: int, **options) -> Path:
    """Write `fig` to `path` as a PNG (atomically: a reader never sees half an image), then close it;
    `options`: more keyword arguments of Figure.savefig. Characters no font of the figure draws are
    named in one warning, unless every one was named for an earlier figure (an attention map per
    layer shows the same tokens)."""
    missing = undrawable(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, **options))
    pyplot().close(fig)
    if set(missing) - _NAMED:
        import matplotlib

        _NAMED.update(missing)
        shown = "".join(missing[:20]) + ("..." if len(missing) > 20 else "")
        log.warning(
            f"{path}: no installed font draws {len(missing)} of its characters ({shown}): they show as boxes; "
            "install a font that has them (e.g. Debian's fonts-noto-cjk for Chinese, Japanese and Korean), then "
            f"delete matplotlib's list of fonts, {matplotlib.get_cachedir()}/fontlist-*.json, so that it looks again"
        )
    return path


_NAMED: set[str] = set()  # the characters save_png has named in this process


def undrawable(fig) -> list[str]:
    """The characters of the figure's text that none of its fonts (rcParams font.family) has."""
    from matplotlib import text

    shown = {char for artist in fig.findobj(text.Text) for char in artist.get_text() if char.isprintable() and not char.isspace()}
    covered = _covered(tuple(pyplot().rcParams["font.family"]))
    return sorted(char for char in shown if ord(char) not in covered)


@functools.cache
def _covered(families: tuple[str, ...]) -> frozenset[int]:
    """The code points the fonts of `families` (as matplotlib finds them) draw."""
    from matplotlib import font_manager, ft2font

    paths = {font_manager.findfont(font_manager.FontProperties(family=family)) for family in families}
    return frozenset(point for path in paths for point in ft2font.FT2Font(path).get_charmap())


def loss_axis(ax, losses: Iterable[float | None]) -> None:
    """Put the losses an Axes shows on a log y-axis where they span more than a factor of 30: a
    diverged run or learning rate (a loss of 1e5 beside 1.5) otherwise flattens every other line
    onto 0. Ordinary curves (a loss falling from ln V to a third of it) keep a linear axis."""
    positive = [x for x in losses if x is not None and math.isfinite(x) and x > 0]
    if positive and max(positive) > 30 * min(positive):
        ax.set_yscale("log")
