"""User corpora: a .txt file, a directory or glob of text files, or a .jsonl file.

A .jsonl line is an object with the text under `text_field` and optional `id`, `year`,
`genre` and `title`. Every other file is one document with an unknown year.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .document import Document
from .fetch import CorpusError, file_digest


def read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path} is not UTF-8 text (bad byte at offset {err.start}); re-encode it as UTF-8") from None


class LocalSource:
    """Text files or JSON lines on disk; genre = the parent folder name (files) or `genre` (jsonl)."""

    name = "local"

    def __init__(self, spec: str, text_field: str = "text"):
        self.spec = spec
        self.text_field = text_field
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
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".md", ".jsonl"))
        elif any(ch in spec for ch in "*?["):
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        else:
            raise CorpusError(
                f"data.source: '{spec}' is neither a built-in corpus (shakespeare, brown) nor an existing file, directory or glob"
            )
        if not files:
            raise CorpusError(f"data.source: '{spec}' matches no .txt, .md or .jsonl files")
        return files

    def resolve_genre(self, wanted: str) -> str | None:
        """Local genres (folder names, jsonl `genre`) are only known while reading: accept any."""
        return wanted

    def fingerprint(self) -> str:
        return f"local-{self.text_field}-" + file_digest(self.files)

    def documents(self) -> Iterator[Document]:
        total = 0
        for path in self.files:
            name = path.relative_to(self.root).as_posix()
            if path.suffix == ".jsonl":
                docs = self._jsonl(path, name)
            else:
                docs = iter([Document(id=name, text=read_utf8(path), genre=path.parent.name, title=path.stem)])
            for doc in docs:
                if doc.text.strip():
                    total += 1
                    yield doc
        if total == 0:
            raise CorpusError(f"data.source: '{self.spec}' contains no text (all documents are empty)")

    def _jsonl(self, path: Path, name: str) -> Iterator[Document]:
        with open(path, encoding="utf-8") as handle:
            try:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        raise CorpusError(f"{path}:{number}: not a JSON object") from None
                    if not isinstance(record, dict) or not isinstance(record.get(self.text_field), str):
                        raise CorpusError(f"{path}:{number}: no string field '{self.text_field}' (set data.text_field)")
                    year = record.get("year")
                    yield Document(
                        id=str(record.get("id", f"{name}:{number}")),
                        text=record[self.text_field],
                        genre=str(record.get("genre", "")),
                        title=str(record.get("title", "")),
                        year=int(year) if isinstance(year, (int, float, str)) and str(year).isdigit() else None,
                    )
            except UnicodeDecodeError as err:
                raise CorpusError(f"{path} is not UTF-8 text (bad byte at offset {err.start}); re-encode it as UTF-8") from None
