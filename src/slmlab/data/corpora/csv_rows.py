"""Rows of CSV and TSV record files, read strictly: one row per document, under a header row
that names its columns (the text's, data.text_field, and the optional LABEL_FIELDS)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

from ...tables import counted
from .compressed import open_text
from .document import refuse_repeated, repeated
from .fetch import CorpusError


def table_rows(path: Path, suffix: str, text_field: str) -> Iterator[tuple[str, int, dict]]:
    """(where, number, row) of each row of a CSV/TSV file with a header row, read strictly: a
    quote that opens a field and never closes it fair and square is a CorpusError, not a field
    that runs on through every later row. A TSV file whose quotes are plain text (`"Tis`,
    `"Hi" she said`) reads with its quotes as text. A row with more (non-empty) cells than the
    header has columns, or too few to hold the text's, is a CorpusError: csv cuts the text at
    an unquoted delimiter or line break in silence (`Hello, world` read as the text "Hello"
    and an id " world")."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a document is one field: no 128 KiB cap
    delimiter = _delimiter(path, suffix)
    quoting = csv.QUOTE_NONE if suffix == ".tsv" and not _reads_quoted(path, delimiter) else csv.QUOTE_MINIMAL
    with open_text(path, newline="") as handle:
        rows = csv.DictReader(handle, delimiter=delimiter, quoting=quoting, strict=True)
        try:
            columns = rows.fieldnames or []
            refuse_repeated(repeated(columns), text_field, str(path), "column")
            for number, row in enumerate(rows, 2):
                where = f"{path}:{rows.line_num}"
                beyond = row.get(None, [])  # csv's restkey: the cells past the header's columns
                if text_field in columns and (any(beyond) or row[text_field] is None):  # empty ones: padding
                    cells = len(columns) + len(beyond) if beyond else sum(cell is not None for cell in row.values())
                    raise CorpusError(
                        f"{where}: {cells} cell{'s' * (cells != 1)} under a header of {counted(len(columns), 'columns')}; "
                        f'quote a text that holds {delimiter!r} or a line break ("...")'
                    )
                yield where, number, row
        except csv.Error as err:
            raise CorpusError(  # DictReader.line_num: where the last whole row ended
                f"{path}:{rows.line_num + 1}: {err}: a quote that opens a field must close it, with the quotes "
                'inside doubled ("say ""hi"""); a text that starts with a quote must be quoted so'
            ) from None


def _reads_quoted(path: Path, delimiter: str) -> bool:
    """Whether a file reads under CSV's quoting rules, strictly (one pass of the csv parser)."""
    with open_text(path, newline="") as handle:
        try:
            for _ in csv.reader(handle, delimiter=delimiter, strict=True):
                pass
        except csv.Error:
            return False
    return True


def _delimiter(path: Path, suffix: str) -> str:
    """A .tsv file's tab; a .csv file's comma, or the semicolon, tab or bar its header row holds
    where it holds no comma (spreadsheets in many locales write ';')."""
    if suffix == ".tsv":
        return "\t"
    with open_text(path, newline="") as handle:  # its own handle: a compressed stream cannot seek back
        header = handle.readline()
    return next((mark for mark in (",", ";", "\t", "|") if mark in header), ",")
