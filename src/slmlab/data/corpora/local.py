"""User corpora: a text file, a directory or glob of them, or a file of records.

Records: a .jsonl line (or a line of a .json file, an item of a .json file holding one array, or
a .json file holding one object over several lines) is an object with the text under `text_field`
(null: an empty document) and optional `id`, `year`, `genre` and `title`, or a JSON string that
is the text itself (a .json array of strings, a .jsonl line per document); a .csv/.tsv file is
a table with a header row naming the same columns (a .csv file's cells are separated by commas,
or by the semicolons, tabs or bars of a header row that holds no comma). Suffixes match in any
case (.TXT); a folder contributes its .txt, .md and .jsonl files (a warning names the others; links
to folders followed, each file read once). A file compressed with gzip, bzip2,
xz or zstd (.jsonl.gz, .txt.zst) is read as the file its name has without that suffix
(compressed.py); an archive (.zip, .tar) is refused with what to do. A year is read as users write
it: 1906, 1906.0 (pandas writes integer columns with a missing value that way), "1906" or
"1906.0"; null, "" and NaN mean unknown; anything else is refused with the file and line. Every
other file is one document with an unknown year and its folder's name as genre, or, with
`doc_separator` (seed 002's streams: `code.txt`, `prose.txt` holding documents separated by a
literal "<EOS>"), the documents between the markers, each of the genre (stream) named by the
file's stem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ...config import BUILTIN_CORPORA
from ...files import HEAD_BYTES, file_kind, file_name_text, is_run_folder, not_utf8, parse_json, wide_text
from ...tables import counted
from .compressed import (
    ARCHIVES,
    DECOMPRESSION_ERRORS,
    DECOMPRESSORS,
    compression,
    file_bytes,
    format_suffix,
    open_text,
    plain_stem,
)
from .csv_rows import table_rows
from .document import Document, refuse_repeated
from .fetch import CorpusError, file_digest
from .json_array import array_items
from .listing import corpus_files, glob_files

log = logging.getLogger("slmlab")


def read_utf8(path: Path) -> str:
    try:
        with open_text(path) as handle:
            return handle.read()
    except UnicodeDecodeError:
        raise CorpusError(not_utf8(str(path), file_bytes(path))) from None


def _first_character(path: Path, chunk: int = 4096) -> str:
    """The first character of a text file that is not white space ("" where there is none)."""
    with open_text(path) as handle:
        while part := handle.read(chunk):
            if stripped := part.lstrip():
                return stripped[0]
    return ""


def split_stream(handle, separator: str, chunk: int = 1 << 22) -> Iterator[str]:
    """What handle.read().split(separator) gives, one part at a time, reading `chunk` characters
    at a time: a 2 GB file of documents (TinyStories and its "<|endoftext|>") is held a document
    at a time, never whole. A marker across two reads is found in the last len(separator) - 1
    characters kept from the one before."""
    keep = len(separator) - 1
    parts: list[str] = []  # the current document so far
    tail = ""
    while block := handle.read(chunk):
        text, start = tail + block, 0
        while (end := text.find(separator, start)) != -1:
            parts.append(text[start:end])
            yield "".join(parts)
            parts, start = [], end + len(separator)
        cut = max(start, len(text) - keep)  # a marker that starts before `cut` ends in `text`: found above
        parts.append(text[start:cut])
        tail = text[cut:]
    parts.append(tail)
    yield "".join(parts)


def parse_year(value, where: str) -> int | None:
    """A document's year from JSON: an integer, an integer-valued float or string -> int;
    None, "", NaN -> None (unknown); anything else is a CorpusError naming `where`."""
    given = value
    if isinstance(value, str):
        value = value.strip()
        if value.lower() in ("", "nan", "null", "none"):
            return None
        with contextlib.suppress(ValueError):
            value = float(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
        raise CorpusError(f"{where}: year {given!r} is not a whole number; write the year alone (1906) or leave it out")
    return int(value)


def parse_label(value, where: str, field: str) -> str:
    """A document's id, genre or title from a record: a string, or a number written as one; None,
    NaN and blank text -> "" (not given). A list, an object, bytes or a boolean is a CorpusError
    naming `where`: written with str() it would become a genre "['a', 'b']"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = "bytes" if isinstance(value, bytes) else json_kind(value)
        raise CorpusError(f"{where}: field '{field}' holds {kind}, not text; write it as a string or leave it out")
    text = str(value)
    return text if text.strip() else ""


def _read_from(path: Path) -> str:
    """Where a relative data.source was looked for: a run's recorded source is relative to the folder
    it was trained from, which need not be the one a later command runs in."""
    here = Path.cwd()
    return (
        ""
        if path.is_absolute()
        else f" (a relative path, read from the working directory {here}: run from the folder it is relative to)"
    )


def _not_found_hint(spec: str, path: Path) -> str:
    """What a data.source that names nothing was likely meant as: a built-in corpus with genres in
    --persona-data's form ('brown:R'), an address (nothing is downloaded), or a relative path."""
    name, colon, genres = spec.partition(":")
    if colon and name in BUILTIN_CORPORA:
        listed = ", ".join(repr(g) for g in genres.split(",") if g)
        genres = f" and data.genres = [{listed}]" if listed else ""
        return f" ('{name}:GENRES' is --persona-data's form: here give data.source = '{name}'{genres})"
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", spec):
        return " (an address: slmlab downloads no corpus; fetch the text and give the path of its copy)"
    return _read_from(path)


def _what_else(folder: Path, spec: str) -> str:
    """Why a folder gave no corpus files, and what to give instead."""
    others = corpus_files(folder, None)
    *compressed, last = DECOMPRESSORS
    found = f"holds no .txt, .md or .jsonl files (plain, {', '.join(compressed)} or {last}) and no .parquet files"
    if not others:
        return f"{found} (nor any other file outside hidden folders)"
    example = others[0].relative_to(folder).as_posix()
    return (
        f"{found} (it holds {len(others)} other, e.g. '{example}'; a folder's .json, .csv and .tsv files are read only "
        f"when named by their path, and a glob reads every file it matches as text: '{Path(spec) / '*'}')"
    )


def json_kind(value) -> str:
    """What a parsed JSON value is, in JSON's words ('an array', 'a number', ...)."""
    kinds = (
        (dict, "an object"),
        (list, "an array"),
        (str, "a string"),
        (bool, "true or false"),
        (int, "a number"),
        (float, "a number"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), "null")


def one_spread_object(path: Path) -> bool:
    """Whether a .json file that holds no array is one JSON object spread over lines, not JSON
    lines: its first line is no JSON value, and its whole text one object (read whole only then:
    a 2 GB file of JSON lines was held whole to ask)."""
    with open_text(path) as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        json.loads(first)
        return False
    except json.JSONDecodeError:
        try:
            return isinstance(json.loads(read_utf8(path)), dict)
        except json.JSONDecodeError:
            return False


class LocalSource:
    """Text files or JSON lines on disk; genre = the parent folder name (files) or `genre` (jsonl)."""

    name = "local"

    def __init__(self, spec: str, text_field: str = "text", doc_separator: str = ""):
        self.spec = spec
        self.text_field = text_field
        self.doc_separator = doc_separator
        self.files = self._resolve(spec)
        # document ids are paths relative to this root, so a corpus gets the same train/val split
        # (a hash of the ids) wherever it lies
        self.root = Path(os.path.commonpath([p.parent for p in self.files]))
        self.genres: tuple[str, ...] = ()

    @staticmethod
    def _resolve(spec: str) -> list[Path]:
        path = Path(spec).expanduser()
        if path.is_file():
            files = [path]
        elif path.is_dir():
            found = corpus_files(path, None)  # one walk of the folder for what it reads and what it leaves out
            files = [p for p in found if format_suffix(p) in FOLDER_FORMATS]
            runs = [p.parent for p in files if p.name == "metrics.jsonl" and is_run_folder(p.parent)]
            if runs:  # its metrics log would fail as records, its reports would be read as text
                where = "is" if runs[0] == path else "holds"
                raise CorpusError(
                    f"data.source: '{spec}' {where} a slmlab run folder ({runs[0]}), not a corpus: "
                    "name a folder of your text without runs in it"
                )
            if not files:
                raise CorpusError(f"data.source: '{spec}' {_what_else(path, spec)}")
            warn_of_files_left_out(path, [p for p in found if format_suffix(p) not in FOLDER_FORMATS], TEXT_FOLDER)
        elif any(ch in spec for ch in "*?["):
            files = glob_files(str(path))
            if not files:
                raise CorpusError(f"data.source: the glob '{spec}' matches no file{_read_from(path)}")
        elif (kind := file_kind(path)) in ("pipe", "device"):
            raise CorpusError(
                f"data.source: '{spec}' is a {kind}, not a corpus file: a corpus is read more than once (its fingerprint, "
                "its tokenizer, its token files); save the text to a file and give that"
            )
        else:
            raise CorpusError(
                f"data.source: '{spec}' is neither a built-in corpus ({', '.join(BUILTIN_CORPORA)}) nor an existing file, directory or "
                f"glob{_not_found_hint(spec, path)}"
            )
        return files

    def resolve_genre(self, wanted: str) -> str | None:
        """Local genres (folder names, jsonl `genre`) are only known while reading: accept any."""
        return wanted

    def fingerprint(self) -> str:
        separator = f"-sep{hashlib.sha256(self.doc_separator.encode()).hexdigest()[:8]}" if self.doc_separator else ""
        return f"local-{self.text_field}{separator}-" + file_digest(self.files, self._id_and_genre)

    def _id_and_genre(self, path: Path) -> str:
        """What a file's documents take from its path: ids (below the root) and genre (its folder)."""
        return f"{self._name(path)}|{file_name_text(path.parent.name)}"

    def _name(self, path: Path) -> str:
        """A file's documents' id: its path below the root, as text."""
        return file_name_text(path.relative_to(self.root).as_posix())

    def documents(self) -> Iterator[Document]:
        total = 0
        for path in self.files:
            try:
                for doc in self._file_documents(path):
                    if doc.text.strip():
                        total += 1
                        yield doc
            except DECOMPRESSION_ERRORS as err:
                if not compression(path) or getattr(err, "errno", None) is not None:
                    raise  # a plain file's, or the system's (permission denied, a read error of the disk)
                raise CorpusError(f"{path} is not a whole {compression(path)} file ({err}); fetch or compress it again") from None
        if total == 0:
            raise CorpusError(f"data.source: '{self.spec}' contains no text (all documents are empty)")

    def _file_documents(self, path: Path) -> Iterator[Document]:
        """The documents of one file, empty ones included."""
        name, suffix = self._name(path), format_suffix(path)
        if path.suffix.lower() in ARCHIVES:
            raise CorpusError(f"{path} is an archive ({path.suffix.lower()}); unpack it first: slmlab reads {READABLE}")
        if problem := wide_text(file_bytes(path, HEAD_BYTES)):
            raise CorpusError(f"{path} {problem}; re-encode it as UTF-8")
        stem = file_name_text(plain_stem(path))
        if suffix in RECORD_FORMATS:
            table = suffix in (".csv", ".tsv")
            for where, key, record in self._records(path, suffix):
                yield self._document(record, where, f"{name}:{key}", table)
        elif self.doc_separator:
            try:
                with open_text(path) as handle:
                    for i, text in enumerate(split_stream(handle, self.doc_separator)):
                        yield Document(id=f"{name}#{i}", text=text, genre=stem, title=stem)
            except UnicodeDecodeError:
                raise CorpusError(not_utf8(str(path), file_bytes(path))) from None
        else:
            yield Document(id=name, text=read_utf8(path), genre=file_name_text(path.parent.name), title=stem)

    def _document(self, record, where: str, default_id: str, table: bool = False) -> Document:
        """One record (a JSON object, a CSV row (`table`), or a JSON string: the text alone) as a
        Document; a null text is an empty document (left out, as a Parquet null is)."""
        if isinstance(record, str):
            return Document(id=default_id, text=record, genre="", title="")
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: a record is a JSON object with a '{self.text_field}' field, not {json_kind(record)}")
        refuse_repeated(getattr(record, "repeated", frozenset()), self.text_field, where)
        if self.text_field not in record:
            names = [key for key in record if key is not None]  # None: a CSV row's cells beyond its header's
            fields = ", ".join(repr(key if len(key) <= 40 else key[:37] + "...") for key in names[:12]) or "none"
            nested = next((key for key, value in record.items() if isinstance(value, list) and value and key), None)
            fix = (  # {"data": [{...}, ...]}: the records are one level down
                f"field '{nested}' holds a list of {len(record[nested])}: save those as JSON lines or one JSON array"
                if nested is not None
                else "set data.text_field to the field that holds the text"
                + (" (a CSV file's first row names its columns)" if table else "")
            )
            raise CorpusError(f"{where}: no field '{self.text_field}' (its fields: {fields}); {fix}")
        if not isinstance(record[self.text_field], (str, type(None))):
            raise CorpusError(f"{where}: field '{self.text_field}' holds {json_kind(record[self.text_field])}, not text")
        given = {key: parse_label(record.get(key), where, key) for key in ("id", "genre", "title")}
        return Document(
            id=given["id"] or default_id,
            text=record[self.text_field] or "",
            genre=given["genre"],
            title=given["title"],
            year=parse_year(record.get("year"), where),
        )

    def _records(self, path: Path, suffix: str) -> Iterator[tuple[str, int, object]]:
        """(where, number, record) of each record of a JSON lines file, a .json file (JSON lines or
        one array of objects) or a CSV/TSV file with a header row."""
        try:
            if suffix in (".csv", ".tsv"):
                yield from table_rows(path, suffix, self.text_field)
            elif suffix == ".json" and _first_character(path) == "[":
                with open_text(path) as handle:
                    yield from ((f"{path}: item {i}", i, record) for i, record in enumerate(array_items(handle, str(path)), 1))
            elif suffix == ".json" and one_spread_object(path):  # one pretty-printed record
                yield str(path), 1, parse_json(read_utf8(path), path, CorpusError)
            else:
                with open_text(path) as handle:
                    for number, line in enumerate(handle, 1):
                        line = line.lstrip("\ufeff")  # files joined with `cat` keep each one's byte-order mark
                        if line.strip():
                            yield f"{path}:{number}", number, parse_json(line, f"{path}:{number}", CorpusError, "a JSON object")
        except UnicodeDecodeError:
            raise CorpusError(not_utf8(str(path), file_bytes(path))) from None


RECORD_FORMATS = (".jsonl", ".json", ".csv", ".tsv")
FOLDER_FORMATS = (".txt", ".md", ".jsonl")  # what a folder contributes: a stray .json (package.json) is no corpus
TEXT_FOLDER = "its .txt, .md and .jsonl files"
_said: set = set()


def say_once(level: int, message: str, key=None) -> None:
    """Log a line about a corpus once per process (per `key`, default the line itself): the
    documents are read more than once (tokenizer training, then tokenizing), and the line is the
    same each time."""
    key = message if key is None else key
    if key not in _said:
        _said.add(key)
        log.log(level, "%s", message)


def warn_of_files_left_out(folder: Path, left_out: list[Path], contributes: str) -> None:
    """Say once per folder which of its files (`left_out`: CSV shards, .rst or extensionless text,
    the .txt beside Parquet shards) a folder corpus does not read, and how to read them, so that a
    corpus is never half-read in silence. `contributes`: what the folder reads."""
    if left_out:
        first = left_out[0]
        suffixes = first.suffixes[-2 if compression(first) else -1 :] if first.suffix else []
        pattern = "*" + "".join(suffixes)  # *.csv, *.json.gz, *.Debian.gz: what matches the example, in its case
        if first.parent != folder:  # the folder is read through its subfolders
            pattern = f"**/{pattern}"
        examples = ", ".join(p.relative_to(folder).as_posix() for p in left_out[:3])
        say_once(
            logging.WARNING,
            f"{folder}: {counted(len(left_out), 'files')} left out (e.g. {examples}): a folder contributes {contributes}; name others "
            f"by path or glob (data.source = '{folder}/{pattern}')",
            key=folder.resolve(),
        )


READABLE = (
    "text (.txt, .md), JSON lines (.jsonl, .json), JSON arrays of objects or strings (.json), CSV/TSV with a header (each also "
    f"compressed: {', '.join(DECOMPRESSORS)}), Parquet"
)
