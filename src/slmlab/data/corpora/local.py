"""User corpora: a .txt file, a directory or glob of text files, or a .jsonl file.

A .jsonl line is an object with the text under `text_field` and optional `id`, `year`,
`genre` and `title`. A year is read as users write it: 1906, 1906.0 (pandas writes integer
columns with a missing value that way), "1906" or "1906.0"; null, "" and NaN mean unknown; anything
else is refused with the file and line. Every other file is one document with an unknown year
and its folder's name as genre, or, with `doc_separator` (seed 002's streams: `code.txt`,
`prose.txt` holding documents separated by a literal "<EOS>"), the documents between the markers,
each of the genre (stream) named by the file's stem.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

from ...files import lone_surrogate
from .document import Document
from .fetch import CorpusError, file_digest


def read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path} is not UTF-8 text (bad byte at offset {err.start}); re-encode it as UTF-8") from None


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
        raise CorpusError(f"{where}: year {given!r} is not a whole number; write it as 1906 or leave it out")
    return int(value)


SKIPPED_FOLDERS = ("__MACOSX",)  # macOS zip resource forks


def corpus_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files under `folder` with one of `suffixes`, sorted, leaving out hidden files and folders
    (.git, .ipynb_checkpoints copies that would put one text on both sides of the split, .DS_Store)
    and __MACOSX resource forks, as a shell glob does."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix in suffixes
        and not any(part.startswith(".") or part in SKIPPED_FOLDERS for part in path.relative_to(folder).parts)
    )


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
            files = corpus_files(path, (".txt", ".md", ".jsonl"))
        elif any(ch in spec for ch in "*?["):
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        else:
            raise CorpusError(
                f"data.source: '{spec}' is neither a built-in corpus (shakespeare, brown) nor an existing file, directory or glob"
            )
        if not files:
            raise CorpusError(f"data.source: '{spec}' matches no .txt, .md, .jsonl or .parquet files")
        return files

    def resolve_genre(self, wanted: str) -> str | None:
        """Local genres (folder names, jsonl `genre`) are only known while reading: accept any."""
        return wanted

    def fingerprint(self) -> str:
        separator = f"-sep{hashlib.sha256(self.doc_separator.encode()).hexdigest()[:8]}" if self.doc_separator else ""
        return f"local-{self.text_field}{separator}-" + file_digest(self.files)

    def documents(self) -> Iterator[Document]:
        total = 0
        for path in self.files:
            name = path.relative_to(self.root).as_posix()
            if path.suffix == ".jsonl":
                docs = self._jsonl(path, name)
            elif self.doc_separator:
                parts = read_utf8(path).split(self.doc_separator)
                docs = (Document(id=f"{name}#{i}", text=text, genre=path.stem, title=path.stem) for i, text in enumerate(parts))
            else:
                docs = iter([Document(id=name, text=read_utf8(path), genre=path.parent.name, title=path.stem)])
            for doc in docs:
                if doc.text.strip():
                    total += 1
                    yield doc
        if total == 0:
            raise CorpusError(f"data.source: '{self.spec}' contains no text (all documents are empty)")

    def _jsonl(self, path: Path, name: str) -> Iterator[Document]:
        with open(path, encoding="utf-8-sig") as handle:
            try:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        raise CorpusError(f"{path}:{number}: not a JSON object") from None
                    bad = lone_surrogate(record) if "\\u" in line else None  # only a \u escape makes one
                    if bad:
                        raise CorpusError(
                            f"{path}:{number}: holds {bad}, half of a UTF-16 pair and no character; fix or drop that line"
                        )
                    if not isinstance(record, dict) or not isinstance(record.get(self.text_field), str):
                        raise CorpusError(f"{path}:{number}: no string field '{self.text_field}' (set data.text_field)")
                    year = parse_year(record.get("year"), f"{path}:{number}")
                    yield Document(
                        id=str(record.get("id", f"{name}:{number}")),
                        text=record[self.text_field],
                        genre=str(record.get("genre", "")),
                        title=str(record.get("title", "")),
                        year=year,
                    )
            except UnicodeDecodeError as err:
                raise CorpusError(f"{path} is not UTF-8 text (bad byte at offset {err.start}); re-encode it as UTF-8") from None
