"""Columnar corpora: Parquet shards (FineWeb and its kin) and Hugging Face datasets saved with
`save_to_disk`, read with pyarrow one record batch at a time, so a corpus larger than memory
streams through.

A row is a document: its text in the column `data.text_field`; the optional columns `id`,
`year`, `genre` and `title` are read where present (a missing id becomes `file:row`). A saved
dataset is a folder with `state.json` (one split: its Arrow stream files) or `dataset_dict.json`
(several splits, read in the order it lists them; ids are prefixed with the split). Nothing is
downloaded: these are local files only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ...files import file_name_text, read_json
from .document import LABEL_FIELDS, Document, refuse_repeated, repeated
from .fetch import CorpusError, file_digest
from .listing import corpus_files, glob_files
from .local import parse_label, parse_year, warn_of_files_left_out

RESAVE = "save the dataset again with save_to_disk"
BATCH_ROWS = 1024


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise CorpusError("Parquet and saved-dataset sources need pyarrow: pip install 'slmlab[data]'") from None
    return pyarrow


def _glob(spec: str) -> list[Path]:
    """The files a glob spec ('shards/*.parquet', '**' allowed) matches; [] for a plain path."""
    if not any(ch in spec for ch in "*?["):
        return []
    return glob_files(spec)


def is_columnar(spec: str) -> bool:
    """True for a .parquet file, a glob of them, a folder holding .parquet shards, or a
    `save_to_disk` folder."""
    matches = _glob(spec)
    if matches:
        return all(p.suffix.lower() == ".parquet" for p in matches)
    path = Path(spec).expanduser()
    if path.is_file():
        return path.suffix.lower() == ".parquet"
    if not path.is_dir():
        return False
    return saved_dataset_files(path) is not None or bool(corpus_files(path, (".parquet",)))


def saved_dataset_files(folder: Path) -> list[tuple[str, Path]] | None:
    """[(split, arrow file)] of a `save_to_disk` folder, None if `folder` is not one."""
    if (folder / "dataset_dict.json").is_file():
        splits = read_json(folder / "dataset_dict.json", "saved dataset index", CorpusError, RESAVE).get("splits")
        if not isinstance(splits, list) or not splits:
            raise CorpusError(f"{folder / 'dataset_dict.json'} lists no splits; {RESAVE}")
        return [(split, path) for split in splits for _, path in (saved_dataset_files(folder / split) or [])]
    if not (folder / "state.json").is_file():
        return None
    entries = read_json(folder / "state.json", "saved dataset state", CorpusError, RESAVE).get("_data_files")
    if not isinstance(entries, list) or not entries:
        raise CorpusError(f"{folder / 'state.json'} lists no data files; {RESAVE}")
    files = [folder / str(entry.get("filename", "")) for entry in entries]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CorpusError(f"saved dataset {folder} is missing {missing[0]}; save it again with save_to_disk")
    return [("", f) for f in files]


class ColumnarSource:
    """Parquet files (a file, or every .parquet under a folder) or a `save_to_disk` folder."""

    name = "columnar"

    def __init__(self, spec: str, text_field: str = "text"):
        self.spec, self.text_field = spec, text_field
        path = Path(spec).expanduser()
        saved = saved_dataset_files(path) if path.is_dir() else None
        self.kind = "arrow" if saved is not None else "parquet"
        if saved is not None:
            self.parts = saved
        else:
            files = _glob(spec) or ([path] if path.is_file() else self._folder_shards(path))
            self.parts = [("", f) for f in files]
        if not self.parts:
            raise CorpusError(f"data.source: '{spec}' holds no .parquet files")
        self.root = path if path.is_dir() else Path(os.path.commonpath([f.parent for f in self.files]))
        self.genres: tuple[str, ...] = ()

    @staticmethod
    def _folder_shards(folder: Path) -> list[Path]:
        """The .parquet files under `folder`, its other files said to be left out (the .txt beside
        the shards, which a folder of text alone would have read)."""
        found = corpus_files(folder, None)
        shards = [p for p in found if p.suffix.lower() == ".parquet"]
        if shards:
            warn_of_files_left_out(folder, [p for p in found if p.suffix.lower() != ".parquet"], "its .parquet shards alone")
        return shards

    @property
    def files(self) -> list[Path]:
        """The files read, in order (as LocalSource.files)."""
        return [f for _, f in self.parts]

    def resolve_genre(self, wanted: str) -> str | None:
        """Genres come from the `genre` column, known only while reading: accept any."""
        return wanted

    def fingerprint(self) -> str:
        """Over each file's split and path below the root (the default ids) and its content."""
        split_of = {path: split for split, path in self.parts}
        return f"{self.kind}-{self.text_field}-" + file_digest(self.files, lambda path: f"{split_of[path]}|{self._name(path)}")

    def _name(self, path: Path) -> str:
        return file_name_text(os.path.relpath(path, self.root).replace(os.sep, "/"))

    def _batches(self, path: Path):
        """pyarrow record batches of `path`, one at a time."""
        pa = _pyarrow()
        try:
            if self.kind == "parquet":
                handle = pa.parquet.ParquetFile(path)
                self._check_text_column(path, handle.schema_arrow.names)
                columns = [c for c in (self.text_field, *LABEL_FIELDS) if c in handle.schema_arrow.names]
                yield from handle.iter_batches(batch_size=BATCH_ROWS, columns=columns)
            else:
                with pa.memory_map(str(path)) as source:
                    reader = pa.ipc.open_stream(source)
                    self._check_text_column(path, reader.schema.names)
                    yield from reader
        except (pa.ArrowException, OSError) as err:
            raise CorpusError(f"{path} is not a readable {self.kind} file ({str(err).splitlines()[0][:100]})") from None

    def _check_text_column(self, path: Path, names: list[str]) -> None:
        refuse_repeated(repeated(names), self.text_field, str(path), "column")
        if self.text_field not in names:
            raise CorpusError(f"{path}: no column '{self.text_field}' (columns: {', '.join(names)}); set data.text_field")

    def documents(self) -> Iterator[Document]:
        total = 0
        for split, path in self.parts:
            name = self._name(path)
            row = 0
            for batch in self._batches(path):
                columns = {c: batch.column(c).to_pylist() for c in (self.text_field, *LABEL_FIELDS) if c in batch.schema.names}
                for i, text in enumerate(columns[self.text_field]):
                    where = f"{path} row {row + i}"
                    if text is None:
                        continue
                    if not isinstance(text, str):
                        raise CorpusError(f"{where}: column '{self.text_field}' holds {type(text).__name__}, not text")
                    if not text.strip():
                        continue
                    label = {
                        key: parse_label(columns[key][i], where, key) if key in columns else ""
                        for key in ("id", "genre", "title")
                    }
                    doc_id = label["id"] or f"{name}:{row + i}"
                    total += 1
                    yield Document(
                        id=f"{split}/{doc_id}" if split else doc_id,
                        text=text,
                        genre=label["genre"],
                        title=label["title"],
                        year=parse_year(columns["year"][i], where) if "year" in columns else None,
                    )
                row += batch.num_rows
        if total == 0:
            raise CorpusError(f"data.source: '{self.spec}' contains no text (every '{self.text_field}' is empty)")
