"""Corpora: built-in (Shakespeare, Brown), local text sources and columnar ones (Parquet, saved datasets), with genre and year filters.

selection = select_documents(cfg.data)
for doc in selection: ...          # lazily, one Document at a time
selection.dropped_by_year         # counted after iteration
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

from ...config import DataConfig
from .brown import BrownSource
from .columnar import ColumnarSource, is_columnar
from .document import Document
from .fetch import CorpusError
from .local import LocalSource
from .shakespeare import ShakespeareSource

log = logging.getLogger("slmlab")

__all__ = ["CorpusError", "Document", "DocumentSelection", "open_source", "select_documents"]


class Source(Protocol):
    name: str
    genres: tuple[str, ...]

    def fingerprint(self) -> str: ...

    def resolve_genre(self, wanted: str) -> str | None: ...

    def documents(self) -> Iterator[Document]: ...


def open_source(data: DataConfig) -> Source:
    """Resolve `data.source` to a corpus object (built-in name or a local path)."""
    builtins = {"shakespeare": ShakespeareSource, "brown": BrownSource}
    if data.source in builtins:
        return builtins[data.source](data.cache_dir)
    if is_columnar(data.source):
        return ColumnarSource(data.source, data.text_field)
    return LocalSource(data.source, data.text_field, data.doc_separator)


def _resolve_genres(source: Source, wanted: list[str]) -> set[str]:
    resolved = set()
    for genre in wanted:
        letter = source.resolve_genre(genre)
        if letter is None:
            choices = ", ".join(source.genres) or "none (this source has no genres)"
            raise CorpusError(f"data.genres: '{genre}' is not a genre of {source.name} (choose from {choices})")
        resolved.add(letter)
    return resolved


class DocumentSelection:
    """Iterates the documents that pass `data.genres`, `data.max_year` and `data.max_documents`."""

    def __init__(self, data: DataConfig, source: Source | None = None):
        self.data = data
        self.source = source or open_source(data)
        self.genres = _resolve_genres(self.source, data.genres) if data.genres else set()
        self.kept = 0
        self.dropped_by_year = 0
        self.dropped_unknown_year = 0
        self.unknown_year = 0  # kept documents whose year is not known

    def fingerprint(self) -> str:
        d = self.data
        return (
            f"{self.source.fingerprint()}|genres={sorted(self.genres)}|max_year={d.max_year}"
            f"|unknown={d.allow_unknown_year}|max_docs={d.max_documents}"
        )

    def __iter__(self) -> Iterator[Document]:
        self.kept = self.dropped_by_year = self.dropped_unknown_year = self.unknown_year = 0
        for doc in self.source.documents():
            if self.genres and doc.genre not in self.genres:
                continue
            if doc.year is None and not self.data.allow_unknown_year:
                self.dropped_unknown_year += 1
                continue
            if self.data.max_year and doc.year is not None and doc.year > self.data.max_year:
                self.dropped_by_year += 1
                continue
            if self.data.max_documents and self.kept >= self.data.max_documents:
                break
            self.kept += 1
            self.unknown_year += doc.year is None
            yield doc
        if self.data.max_year or not self.data.allow_unknown_year:
            log.info(
                "year cut-off %d: dropped %d documents later than it, %d of unknown year",
                self.data.max_year,
                self.dropped_by_year,
                self.dropped_unknown_year,
            )
        if self.kept == 0:
            raise CorpusError(f"data: no documents left from '{self.data.source}' after the genre/year filters")


def select_documents(data: DataConfig) -> DocumentSelection:
    return DocumentSelection(data)
