"""Token data: a corpus tokenized once into memory-mapped files (sampling windows: sampling.py).

Layout of one prepared corpus (under `<cache>/tokens/<key>/`, key = hash of the document
selection, the tokenizer and the split):

    train.bin, val.bin   flat token ids (uint16 when the vocabulary fits, else uint32); documents
                         are joined by the tokenizer's separator and grouped by stream (genre)
    manifest.json        source fingerprint, tokenizer digest, counts, each stream's [start, end)
                         range, the SHA-256 of both token files and the validation documents'
                         ids; written last, so its presence means "complete"

Opening the files checks them against the manifest (sizes and checksums): a truncated, zeroed or
bit-flipped file is an error naming it, never trained on.

The split is by document (split.py), and a corpus of a single document is split by position.
Documents stream through two passes (ids, then text) and are written in batches, so a corpus
larger than RAM never has to fit in memory; training reads the files through `np.memmap`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..files import atomic_write_text, fsync_directory, read_json, remove_stale_temps, require_fields, room_for, sha256_file
from ..interruptible import interruptible
from ..locks import DirectoryLock
from ..phase_progress import PhaseProgress
from .corpora import CorpusError, DocumentSelection
from .corpora.fetch import cache_dir
from .split import TrainingSide, copies_across_split, splits_by_position, text_digest, validation_ids
from .tokenizer_kinds import load_tokenizer, train_tokenizer, training_pieces
from .tokenizers import Tokenizer, TokenizerError, token_dtype

log = logging.getLogger("slmlab")
# 7: CSV/TSV rows read strictly (a quote that never closes, a row that does not fit its header:
#    refused; a TSV's plain-text quotes are text) and repeated text/label fields refused;
# 6: the manifest lists validation documents with an exact copy in training (the same token files);
# 5: "[EOS]" and "<|endoftext|>" in the text are text, not the special id; .json arrays and .csv/.tsv
#    files are records (they were one plain-text document);
# 4: a leading UTF-8 byte-order mark is not text, one document split by position is on both sides;
# 3: split by each id's own hash, checksums; 2: local ids are relative paths
FORMAT_VERSION = 7
ENCODE_BATCH = 1024  # documents, or fewer when they hold ENCODE_CHARS characters
ENCODE_CHARS = 1 << 22
COPIES_LISTED = 1000  # validation documents with a copy in training, at most, in the manifest


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def get_tokenizer(data: DataConfig, selection: DocumentSelection, progress: bool | None = None) -> Tokenizer:
    """The tokenizer `data` asks for, trained once (`_counted`) and cached by fingerprint (and
    FORMAT_VERSION: how documents are read from the files is part of what it was trained on) as
    tokenizers/<kind>-<key>-<its own SHA-256>.json, so that a cached file damaged into other valid
    JSON is trained again rather than used. `progress`: as prepare_tokens'; it counts the documents
    the tokenizer has read."""
    side = "" if data.tokenizer == "char" else f"|training side {data.val_fraction}"  # what `_counted` reads
    key = _short_hash(f"{FORMAT_VERSION}|{selection.fingerprint()}{side}|{data.tokenizer}|{data.vocab_size}|{data.tiktoken_file}")
    folder = cache_dir(data.cache_dir) / "tokenizers"
    for path in sorted(folder.glob(f"{data.tokenizer}-{key}-*.json")):
        try:
            if sha256_file(path)[:16] != path.stem.rsplit("-", 1)[1]:
                raise TokenizerError(f"cached tokenizer {path} is damaged (its SHA-256 is not the one its name records)")
            return load_tokenizer(path)
        except TokenizerError as err:  # a cache: say so and build it again
            log.warning("%s; training the tokenizer again", err)
            path.unlink(missing_ok=True)
    log.info("training %s tokenizer on %s", data.tokenizer, data.source)
    with PhaseProgress(f"training the {data.tokenizer} tokenizer", None, "documents", bar=progress) as shown:
        tokenizer = interruptible(lambda: train_tokenizer(data, _counted(selection, shown)), waiting=shown.tick)
    text = tokenizer.to_json()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{data.tokenizer}-{key}-{_short_hash(text)}.json", text)
    return tokenizer


def _counted(selection: DocumentSelection, progress: PhaseProgress) -> Iterator[str]:
    """The texts a tokenizer learns from, each counted by `progress` once the tokenizer asks for
    the next, a long one in pieces that train as it does whole (`training_pieces`): the training
    side (split.TrainingSide: the validation text stays unseen, as by the model), but for char,
    whose ids are every character it must encode, validation's too. The documents are counted
    first, once the tokenizer asks for one (byte and gpt2 never do)."""
    kind, side = selection.data.tokenizer, TrainingSide(selection, selection.data.val_fraction)
    progress.set_total(len(selection.ids()) if kind == "char" else side.documents)
    for text in (doc.text for doc in selection) if kind == "char" else side.texts():
        yield from progress.parts(training_pieces(kind, text, ENCODE_CHARS), len(text))


def vocab_size_of(data: DataConfig) -> int:
    """The vocabulary size `data`'s tokenizer will have: known in advance for byte, GPT-2 and BPE
    (no tokenizing), else from the (cached) trained tokenizer."""
    known = {"byte": 256, "gpt2": 50257, "bpe": data.vocab_size}
    return known.get(data.tokenizer) or get_tokenizer(data, DocumentSelection(data)).vocab_size


@dataclass
class TokenSplit:
    """One split's token ids (memory-mapped) and its streams' [start, end) ranges."""

    tokens: np.ndarray
    streams: dict[str, tuple[int, int]]

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class TokenData:
    train: TokenSplit
    val: TokenSplit
    manifest: dict
    directory: Path


def _write_streams(
    selection: DocumentSelection, tokenizer: Tokenizer, val_ids: set[str], dtype: np.dtype, work: Path, progress: PhaseProgress
) -> tuple[dict[str, dict[str, int]], list[tuple[str, bytes]]]:
    """Encode documents in batches, appending each to `work/<split>/<stream>.bin`; returns the
    token counts per split and stream, and each document's (id, text digest) in order.
    A stream's file is opened for each batch that has its documents, never held: a corpus of
    thousands of genres (an author or a site per document) would pass the open-file limit. A
    document of more than ENCODE_CHARS characters (a corpus of one large file) is encoded and
    written a piece at a time (`Tokenizer.exact_pieces`), so its ids are never held whole."""
    separator = np.asarray(tokenizer.separator_ids(), dtype=dtype)
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    documents: list[tuple[str, bytes]] = []
    for split in counts:
        (work / split).mkdir()

    def write(handle, key: tuple[str, str], parts: list[np.ndarray]) -> None:
        _append(handle, parts)
        counts[key[0]][key[1]] = counts[key[0]].get(key[1], 0) + sum(len(part) for part in parts)

    def stream_of(doc) -> tuple[str, str]:
        """The (split, stream) a document goes to; its digest is recorded in document order."""
        documents.append((doc.id, text_digest(doc.text)))
        return "val" if doc.id in val_ids else "train", doc.genre or "all"

    def flush(batch):
        arrays: dict[tuple[str, str], list[np.ndarray]] = {}  # one write per file and batch, in document order
        try:
            encoded = tokenizer.encode_documents([d.text for d in batch])
        except TokenizerError as err:
            raise _refused_document(selection.data.source, tokenizer, batch, err) from None
        for doc, ids in zip(batch, encoded):
            arrays.setdefault(stream_of(doc), []).extend((np.asarray(ids, dtype=dtype), separator))
        for key, parts in arrays.items():
            with open(_stream_file(work, *key), "ab") as handle:
                write(handle, key, parts)
        progress.update(len(batch))

    def write_long(doc) -> None:
        """One long document a piece at a time, counted done in parts (one document of a 2 GB file
        is the whole phase; the parts add up to one)."""
        key = stream_of(doc)
        with open(_stream_file(work, *key), "ab") as handle:
            for piece in progress.parts(tokenizer.exact_pieces(doc.text, ENCODE_CHARS), len(doc.text)):
                try:
                    (ids,) = tokenizer.encode_documents([piece])
                except TokenizerError as err:
                    raise TokenizerError(f"{selection.data.source}, document {doc.id!r}: {err}") from None
                write(handle, key, [np.asarray(ids, dtype=dtype)])
            write(handle, key, [separator])

    batch, chars = [], 0
    for doc in selection:
        if len(doc.text) > ENCODE_CHARS:
            if batch:  # the documents before it first: a stream's documents stay in order
                flush(batch)
                batch, chars = [], 0
            write_long(doc)
            continue
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) == ENCODE_BATCH or chars >= ENCODE_CHARS:
            flush(batch)
            batch, chars = [], 0
    if batch:
        flush(batch)
    return counts, documents


def _refused_document(source: str, tokenizer: Tokenizer, batch: list, err: TokenizerError) -> TokenizerError:
    """`err` (a char tokenizer of another corpus refusing a character) named by the corpus and
    the first document of `batch` the tokenizer refuses."""
    for doc in batch:
        try:
            tokenizer.encode_documents([doc.text])
        except TokenizerError as own:
            return TokenizerError(f"{source}, document {doc.id!r}: {own}")
    return TokenizerError(f"{source}: {err}")


def _append(handle, parts: list[np.ndarray], large: int = 1 << 20) -> None:
    """Write `parts` in order: runs of small arrays joined into one write, a large one (a long
    document's ids) written as it is rather than copied into a join. Through the file's own
    write, whose full disk is an OSError with errno ENOSPC (numpy's tofile has none)."""
    small: list[np.ndarray] = []
    for part in parts:
        if len(part) < large:
            small.append(part)
            continue
        if small:
            handle.write(np.concatenate(small).data)
            small = []
        handle.write(np.ascontiguousarray(part).data)
    if small:
        handle.write(np.concatenate(small).data)


def _stream_file(work: Path, split: str, stream: str) -> Path:
    """Where a stream's tokens gather while tokenizing: named by a hash, since a stream is a genre
    from the corpus ("news/politics", "../x", 300 characters) and no file name."""
    return work / split / f"{_short_hash(stream)}.bin"


def _concatenate(work: Path, split: str, counts: dict[str, int], target: Path) -> dict[str, list[int]]:
    ranges, offset = {}, 0
    with open(target, "wb") as out:
        for stream in sorted(counts):
            with open(_stream_file(work, split, stream), "rb") as part:
                shutil.copyfileobj(part, out, 1 << 22)
            ranges[stream] = [offset, offset + counts[stream]]
            offset += counts[stream]
    return ranges


def _split_single_document(directory: Path, dtype: np.dtype, val_fraction: float, manifest: dict) -> None:
    """A corpus of one document (or of documents that share one id): the last val_fraction of its
    tokens becomes validation, so each split holds part of that text."""
    train = directory / "train.bin"
    total = train.stat().st_size // dtype.itemsize
    cut = int(total * (1 - val_fraction))
    with open(directory / "val.bin", "wb") as val:  # the tail is copied out and cut off, the file never read whole
        if total:
            val.write(np.memmap(train, dtype=dtype, mode="r")[cut:].data)
    os.truncate(train, cut * dtype.itemsize)
    (stream,) = manifest["streams"]["train"]
    manifest["streams"] = {"train": {stream: [0, cut]}, "val": {stream: [0, total - cut]}}
    manifest["documents"]["val"] = manifest["documents"]["train"]
    manifest["split_by_position"] = True


def prepare_tokens(
    data: DataConfig, tokenizer: Tokenizer | None = None, progress: bool | None = None
) -> tuple[Tokenizer, TokenData]:
    """Tokenize the selected corpus once (or reuse the files its manifest describes). `progress`:
    a bar while tokenizing (None: on a terminal only); without one, a log line now and then."""
    selection = DocumentSelection(data)
    tokenizer = tokenizer or get_tokenizer(data, selection, progress)
    key = _short_hash(f"{FORMAT_VERSION}|{selection.fingerprint()}|{tokenizer.digest()}|{data.val_fraction}")
    directory = cache_dir(data.cache_dir) / "tokens" / key
    if not (directory / "manifest.json").is_file():
        with DirectoryLock(directory, "token cache", wait=True):  # parallel runs: one builds, the others wait
            if not (directory / "manifest.json").is_file():
                _build_token_files(selection, tokenizer, data.val_fraction, directory, progress)
    tokens = open_tokens(directory)
    copies = tokens.manifest.get("val_copies_in_train")
    if copies:
        log.warning(
            "%s: %s an exact copy among the training documents (e.g. %r = %r): their "
            "validation loss scores text the model trained on; remove the copies from the corpus",
            data.source,
            "1 validation document has"
            if len(copies) == 1
            else f"{len(copies)}{'+' * (len(copies) == COPIES_LISTED)} validation documents have",
            *copies[0],
        )
    return tokenizer, tokens


def _build_token_files(
    selection: DocumentSelection, tokenizer: Tokenizer, val_fraction: float, directory: Path, progress: bool | None = None
) -> None:
    log.info("tokenizing %s into %s", selection.data.source, directory)
    ids = selection.ids()
    shared = [i for i, n in Counter(ids).items() if n > 1]
    if shared:
        log.warning(
            "%s: ids shared by several documents: %d (e.g. %r); the documents of one id go to one side of the "
            "train/validation split together",
            selection.data.source,
            len(shared),
            shared[0],
        )
    val_ids = set() if splits_by_position(ids) else validation_ids(ids, val_fraction)
    in_val = sum(i in val_ids for i in ids)
    dtype = token_dtype(tokenizer.vocab_size)
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(directory.parent)  # build folders of killed processes
    fix = "free space, or set SLMLAB_CACHE (or data.cache_dir) to a disk with room"  # the first for every verb
    with (
        tempfile.TemporaryDirectory(dir=directory.parent, prefix=f".build.{os.getpid()}.", suffix=".tmp") as tmp,
        room_for(directory.parent, "the token files", fix, CorpusError),
    ):
        work = Path(tmp)
        with PhaseProgress(f"tokenizing {selection.data.source}", len(ids), "documents", bar=progress) as shown:
            counts, documents = _write_streams(selection, tokenizer, val_ids, dtype, work, shown)
        build = work / "out"
        build.mkdir()
        manifest = {
            "format": FORMAT_VERSION,
            "source": selection.data.source,
            "fingerprint": selection.fingerprint(),
            "tokenizer": tokenizer.kind,
            "tokenizer_digest": tokenizer.digest(),
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name,
            "documents": {"train": len(ids) - in_val, "val": in_val},
            "dropped_by_year": selection.dropped_by_year,
            "dropped_unknown_year": selection.dropped_unknown_year,
            "unknown_year": selection.unknown_year,
            "val_fraction": val_fraction,
            "val_ids": sorted(val_ids),
            "split_by_position": False,
            "val_copies_in_train": [list(pair) for pair in copies_across_split(documents, val_ids)[:COPIES_LISTED]],
            "streams": {split: _concatenate(work, split, counts[split], build / f"{split}.bin") for split in ("train", "val")},
        }
        if not val_ids:
            _split_single_document(build, dtype, val_fraction, manifest)
        manifest["tokens"] = {s: sum(e - b for b, e in manifest["streams"][s].values()) for s in ("train", "val")}
        manifest["sha256"] = {f"{s}.bin": sha256_file(build / f"{s}.bin") for s in ("train", "val")}
        atomic_write_text(build / "manifest.json", json.dumps(manifest, indent=1))
        _publish(build, directory)
    log.info("tokens: %d train, %d val", manifest["tokens"]["train"], manifest["tokens"]["val"])


def _publish(build: Path, directory: Path) -> None:
    """Move a finished build into place. Runs sharing the cache (a sweep's parallel jobs) may build
    the same files at once: the first to finish wins, and a complete directory (one with a
    manifest) is never removed, since other processes may be reading it."""
    if (directory / "manifest.json").is_file():
        return  # another process published identical files first; ours are discarded with the temp dir
    if directory.exists():  # an incomplete directory left by hand or by an older slmlab
        shutil.rmtree(directory, ignore_errors=True)
    for name in ("train.bin", "val.bin"):  # durable before the rename makes them visible
        with open(build / name, "rb+") as handle:
            os.fsync(handle.fileno())
    fsync_directory(build)
    try:
        os.replace(build, directory)
    except OSError:
        if not (directory / "manifest.json").is_file():
            raise
    fsync_directory(directory.parent)


MANIFEST_FIELDS = {"format": int, "dtype": str, "tokens": dict, "streams": dict, "sha256": dict}


def open_tokens(directory: Path) -> TokenData:
    """Memory-map a prepared corpus after checking its manifest and both token files (present,
    of the size the manifest says, matching its SHA-256)."""
    manifest_path = directory / "manifest.json"
    fix = f"delete the folder {directory} (a cache: the next run rebuilds it)"
    manifest = read_json(manifest_path, "token manifest", CorpusError, fix)
    require_fields(manifest, MANIFEST_FIELDS, manifest_path, "token manifest", CorpusError, fix)
    try:
        dtype = np.dtype(manifest["dtype"])
        counts = {name: int(manifest["tokens"][name]) for name in ("train", "val")}
        streams = {
            name: {str(k): (int(v[0]), int(v[1])) for k, v in manifest["streams"][name].items()} for name in ("train", "val")
        }
    except (KeyError, TypeError, ValueError, IndexError):
        raise CorpusError(f"token manifest {manifest_path} is damaged (tokens, streams or dtype); {fix}") from None

    def split(name: str) -> TokenSplit:
        path = directory / f"{name}.bin"
        if not path.is_file():
            raise CorpusError(f"token file {path} is missing; {fix}")
        if path.stat().st_size != counts[name] * dtype.itemsize:
            raise CorpusError(
                f"token file {path} is damaged ({path.stat().st_size} bytes, the manifest says "
                f"{counts[name] * dtype.itemsize}); {fix}"
            )
        if sha256_file(path) != manifest["sha256"].get(path.name):
            raise CorpusError(f"token file {path} is damaged (its SHA-256 does not match the manifest); {fix}")
        count = counts[name]
        tokens = np.memmap(path, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype)
        return TokenSplit(tokens, streams[name])

    return TokenData(split("train"), split("val"), manifest, directory)
