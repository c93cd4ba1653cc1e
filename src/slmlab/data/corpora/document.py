"""The unit every corpus yields: one document's text and its metadata."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One document. `genre` names its stream (Brown genre letter, Shakespeare group, ...);
    `year` is the year of writing/performance when known, else None."""

    id: str
    text: str
    genre: str = ""
    title: str = ""
    year: int | None = None
