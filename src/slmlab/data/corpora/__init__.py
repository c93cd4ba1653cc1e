"""Corpora: built-in (Shakespeare, Brown), local text sources and columnar ones (Parquet, saved datasets), with genre and year filters.

selection = select_documents(cfg.data)
for doc in selection: ...          # lazily, one Document at a time
selection.dropped_by_year         # counted after iteration
selection.ids()                   # the documents' ids, remembered from the last whole pass
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ...config import ConfigError, DataConfig
from ...registry import closest
from ...tables import counted
from .brown import BrownSource
from .columnar import ColumnarSource, is_columnar
from .compressed import format_suffix
from .document import Document
from .fetch import CorpusError
from .local import RECORD_FORMATS, LocalSource, say_once
from .shakespeare import ShakespeareSource

__all__ = [
    "CorpusError",
    "Document",
    "DocumentSelection",
    "check_outside_source",
    "check_source_settings",
    "open_source",
    "select_documents",
]


class Source(Protocol):
    name: str
    genres: tuple[str, ...]

    def fingerprint(self) -> str: ...

    def resolve_genre(self, wanted: str) -> str | None: ...

    def documents(self) -> Iterator[Document]: ...


BUILTINS = {"shakespeare": ShakespeareSource, "brown": BrownSource}


def open_source(data: DataConfig) -> Source:
    """Resolve `data.source` to a corpus object (built-in name or a local path)."""
    if data.source in BUILTINS:
        return BUILTINS[data.source](data.cache_dir)
    if is_columnar(data.source):
        return ColumnarSource(data.source, data.text_field)
    return LocalSource(data.source, data.text_field, data.doc_separator)


def check_not_a_source_file(data: DataConfig, out: str | Path, option: str) -> None:
    """Refuse an output path that is one of data.source's own files (`tokenizer train --out
    corpus.txt` replaced the corpus it had just read with the tokenizer's JSON)."""
    if data.source in BUILTINS:
        return
    source = open_source(data)
    target = Path(out).expanduser().resolve()
    if any(Path(f).resolve() == target for f in source.files):
        raise ConfigError(
            f"{option} {out} is a file of data.source '{data.source}': writing there would replace the corpus; name another file"
        )


def check_outside_source(data: DataConfig, folder: str | Path, what: str) -> None:
    """Refuse a folder slmlab writes into (a run's, a sweep's) that is, or lies inside, the folder
    data.source reads: its metrics.jsonl and reports would be read as corpus by the next run (a
    JSON-lines file without text stopped it; Markdown reports became documents)."""
    source = Path(data.source).expanduser()
    if data.source in BUILTINS or not source.is_dir():
        return
    root, target = source.resolve(), Path(folder).expanduser().resolve()
    if target == root or root in target.parents:
        raise ConfigError(
            f"{what} {folder} lies inside data.source '{data.source}': its files would be read as corpus "
            "by the next run; set out_dir to a folder outside the corpus"
        )


def check_source_settings(data: DataConfig) -> None:
    """Refuse data.doc_separator and data.text_field where data.source holds nothing they apply
    to (a separator for a built-in corpus or records, a field name for plain text files): they
    were ignored in silence. Checked where a user's own settings first meet the corpus (a fresh
    run, `data prepare`, `tokenizer train`), not where a run's recorded settings read another
    corpus (`eval --data.source`)."""
    if data.source in BUILTINS:
        kind, plain, records = "a built-in corpus", False, False
    elif is_columnar(data.source):
        kind, plain, records = "Parquet or a saved dataset", False, True
    else:
        suffixes = {format_suffix(path) for path in LocalSource(data.source).files}
        kind = "record files" if suffixes <= set(RECORD_FORMATS) else "plain text files"
        plain, records = not suffixes <= set(RECORD_FORMATS), bool(suffixes & set(RECORD_FORMATS))
    if data.doc_separator and not plain:
        raise ConfigError(
            f"data.doc_separator splits plain text files, and data.source '{data.source}' ({kind}) has none: remove it"
        )
    if data.text_field != DataConfig.text_field and not records:
        raise ConfigError(
            f"data.text_field names the text of records (.jsonl, .json, .csv, Parquet), and data.source "
            f"'{data.source}' ({kind}) has none: remove it"
        )


def _resolve_genres(source: Source, wanted: list[str]) -> set[str]:
    resolved = set()
    for genre in wanted:
        letter = source.resolve_genre(genre)
        if letter is None:
            choices = ", ".join(source.genres) or "none (this source has no genres)"
            aliases = getattr(source, "aliases", {})
            choices += f"; or by name: {', '.join(aliases)}" if aliases else ""
            meant = closest(genre, [*source.genres, *aliases])
            raise CorpusError(f"data.genres: '{genre}' is not a genre of {source.name}{meant} (choose from {choices})")
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
        self._ids: list[str] | None = None  # of the last pass that read the whole selection

    def fingerprint(self) -> str:
        d = self.data
        return (
            f"{self.source.fingerprint()}|genres={sorted(self.genres)}|max_year={d.max_year}"
            f"|unknown={d.allow_unknown_year}|max_docs={d.max_documents}"
        )

    def ids(self) -> list[str]:
        """The selected documents' ids, in order: remembered from the last pass that read the whole
        selection (tokenizer training's count), else read now, so that tokenizing reads the corpus once."""
        if self._ids is None:
            self._ids = [doc.id for doc in self]
        return self._ids

    def __iter__(self) -> Iterator[Document]:
        self.kept = self.dropped_by_year = self.dropped_unknown_year = self.unknown_year = 0
        seen_genres: set[str] = set()
        ids = []
        for doc in self.source.documents():
            if self.genres and doc.genre not in self.genres:
                seen_genres.add(doc.genre)
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
            ids.append(doc.id)
            yield doc
        if self.data.max_year or not self.data.allow_unknown_year:
            say_once(
                logging.INFO,
                f"year cut-off {self.data.max_year} on '{self.data.source}': dropped {counted(self.dropped_by_year, 'documents')} "
                f"later than it, {self.dropped_unknown_year} of unknown year",
            )
        if self.kept == 0 and self.genres and seen_genres and not (self.dropped_by_year or self.dropped_unknown_year):
            shown = ", ".join(sorted(repr(g) for g in seen_genres)[:12])
            raise CorpusError(
                f"data.genres {sorted(self.genres)} matches no document of '{self.data.source}' (its genres: {shown})"
            )
        if self.kept == 0:
            raise CorpusError(f"data: no documents left from '{self.data.source}' after the genre/year filters")
        self._ids = ids
        if self.data.max_year and self.unknown_year == self.kept and not self.dropped_by_year:
            say_once(
                logging.WARNING,
                f"data.max_year = {self.data.max_year} changed nothing: no document of '{self.data.source}' has a "
                "year (records give one in a 'year' field); remove it",
            )


def select_documents(data: DataConfig) -> DocumentSelection:
    return DocumentSelection(data)
