"""The unit every corpus yields: one document's text and its metadata."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import CorpusError


@dataclass(frozen=True)
class Document:
    """One document. `genre` names its stream (Brown genre letter, Shakespeare group, ...);
    `year` is the year of writing/performance when known, else None."""

    id: str
    text: str
    genre: str = ""
    title: str = ""
    year: int | None = None


LABEL_FIELDS = ("id", "year", "genre", "title")  # a record's optional fields (columns) beside its text


def repeated(names: list[str]) -> set[str]:
    """The names a list (a CSV header, a Parquet schema) holds more than once."""
    return {name for name in names if names.count(name) > 1}


def refuse_repeated(twice: set[str] | frozenset[str], text_field: str, where: str, kind: str = "field") -> None:
    """A record, header or schema naming a field slmlab reads (the text, LABEL_FIELDS) more than
    once is a CorpusError: its readers keep one of them in silence (JSON and CSV the last), so the
    text trained on might not be the one meant."""
    field = next((name for name in (text_field, *LABEL_FIELDS) if name in twice), None)
    if field is not None:
        raise CorpusError(
            f"{where}: names the {kind} '{field}' more than once, and only one would be read; rename or drop the others"
        )
