"""Compressed corpus files: gzip, bzip2 and xz through the standard library, zstd through the
`zstandard` package (slmlab[data]). A file `shard.jsonl.gz` reads as `shard.jsonl`, decompressed as
it is read. A file that ends inside its compressed stream is an EOFError and damaged data an
OSError without an errno (DECOMPRESSION_ERRORS), as the standard library's readers raise them."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path

from .fetch import CorpusError

DECOMPRESSION_ERRORS = (EOFError, OSError, lzma.LZMAError)
ARCHIVES = (".zip", ".7z", ".tar", ".tgz")  # many files in one: refused, with what to do


class ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a .zst file, every frame of it (`zstd -T`, pzstd and joined files
    write several). zstandard's own stream reader returns a truncated file's partial text without
    a word; here a file that ends inside a frame is an EOFError, and damaged data an OSError."""

    READ = 1 << 16  # compressed bytes fed at a time

    def __init__(self, path: Path):
        try:
            import zstandard
        except ImportError:
            raise CorpusError(
                f"{path} is zstd-compressed: install the zstandard package (pip install 'slmlab[data]') or decompress it"
            ) from None
        self._errors = zstandard.ZstdError
        self._decompressor = zstandard.ZstdDecompressor(max_window_size=1 << 31)  # files of `zstd --long` too
        self._frame = self._decompressor.decompressobj()
        self._in_frame = False  # bytes of the current frame fed, its end not yet seen
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close(), as a file object closes its own)
        self._out, self._at = b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._at == len(self._out):
            data = self._file.read(self.READ)
            if not data:
                if self._in_frame:
                    raise EOFError("the file ends inside a zstd frame")
                return 0
            self._out, self._at = self._decompress(data), 0
        n = min(len(buffer), len(self._out) - self._at)
        buffer[:n] = self._out[self._at : self._at + n]
        self._at += n
        return n

    def _decompress(self, data: bytes) -> bytes:
        """`data` through the frames it holds or continues, starting a frame after each one ends."""
        parts = []
        try:
            while data:
                parts.append(self._frame.decompress(data))
                self._in_frame = not self._frame.eof
                if self._in_frame:
                    break
                data, self._frame = self._frame.unused_data, self._decompressor.decompressobj()
        except self._errors as err:
            raise OSError(f"zstd: {err}") from None
        return b"".join(parts)

    def close(self) -> None:
        self._file.close()
        super().close()


def _open_zstd(path: Path, mode: str = "rb", encoding: str | None = None, newline: str | None = None):
    reader = io.BufferedReader(ZstdFrames(path))
    return reader if mode == "rb" else io.TextIOWrapper(reader, encoding=encoding, newline=newline)


DECOMPRESSORS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".zst": _open_zstd}


def compression(path: Path) -> str:
    """The compression suffix of `path` ('.gz', ...), or '' for a file read as it is."""
    suffix = path.suffix.lower()
    return suffix if suffix in DECOMPRESSORS else ""


def format_suffix(path: Path) -> str:
    """The suffix that says how a file is read, lower case: 'shard.JSONL.gz' -> '.jsonl' (a compressed
    file reads as what it holds), 'notes.txt' -> '.txt'."""
    return Path(path.stem).suffix.lower() if compression(path) else path.suffix.lower()


def plain_stem(path: Path) -> str:
    """A file's name without its suffixes of format and compression: 'code.txt.gz' -> 'code'."""
    return Path(path.stem).stem if compression(path) else path.stem


def open_text(path: Path, newline: str | None = None):
    """`path` opened for reading as UTF-8 text (a leading byte-order mark dropped), decompressed
    as it is read where its suffix names a compression."""
    opener = DECOMPRESSORS.get(compression(path), open)
    return opener(path, "rt", encoding="utf-8-sig", newline=newline)


def file_bytes(path: Path, size: int = -1) -> bytes:
    """The first `size` bytes (-1: all) of what `path` holds, decompressed."""
    with DECOMPRESSORS.get(compression(path), open)(path, "rb") as handle:
        return handle.read(size)
