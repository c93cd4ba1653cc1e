"""Token data: a corpus tokenized once into memory-mapped files (sampling windows: sampling.py).

Layout of one prepared corpus (under `<cache>/tokens/<key>/`, key = hash of the document
selection, the tokenizer and the split):

    train.bin, val.bin   flat token ids (uint16 when the vocabulary fits, else uint32); documents
                         are joined by the tokenizer's separator and grouped by stream (genre)
    manifest.json        source fingerprint, tokenizer digest, counts and each stream's
                         [start, end) range; written last, so its presence means "complete"

The split is by document and deterministic: documents are ranked by sha1(id) and the first
ceil(val_fraction * n) go to validation (a corpus of a single document is split by position).
Documents stream through two passes (ids, then text) and are written in batches, so a corpus
larger than RAM never has to fit in memory; training reads the files through `np.memmap`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..files import atomic_write_text
from .corpora import DocumentSelection
from .corpora.fetch import cache_dir
from .tokenizers import Tokenizer, tokenizer_from_json, train_tokenizer

log = logging.getLogger("slmlab")
FORMAT_VERSION = 2  # 2: local corpora's document ids are relative paths (the val split moved)
ENCODE_BATCH = 64


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


def get_tokenizer(data: DataConfig, selection: DocumentSelection) -> Tokenizer:
    """The tokenizer `data` asks for, trained on the selection once and cached by fingerprint."""
    key = _short_hash(f"{selection.fingerprint()}|{data.tokenizer}|{data.vocab_size}|{data.tiktoken_file}")
    path = cache_dir(data.cache_dir) / "tokenizers" / f"{data.tokenizer}-{key}.json"
    if path.is_file():
        return tokenizer_from_json(path.read_text(encoding="utf-8"))
    log.info("training %s tokenizer on %s", data.tokenizer, data.source)
    tokenizer = train_tokenizer(data, (doc.text for doc in selection))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, tokenizer.to_json())
    return tokenizer


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


def _split_documents(ids: list[str], val_fraction: float) -> set[str]:
    ranked = sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    n_val = min(len(ids) - 1, max(1, math.ceil(val_fraction * len(ids))))
    return set(ranked[:n_val])


def _write_streams(
    selection: DocumentSelection, tokenizer: Tokenizer, val_ids: set[str], dtype: np.dtype, work: Path
) -> dict[str, dict[str, int]]:
    """Encode documents in batches, appending each to `work/<split>/<stream>.bin`; returns counts."""
    separator = np.asarray(tokenizer.separator_ids(), dtype=dtype)
    handles: dict[tuple[str, str], object] = {}
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}

    def flush(batch):
        for doc, ids in zip(batch, tokenizer.encode_batch([d.text for d in batch])):
            split = "val" if doc.id in val_ids else "train"
            stream = doc.genre or "all"
            key = (split, stream)
            if key not in handles:
                (work / split).mkdir(exist_ok=True)
                handles[key] = open(work / split / f"{stream}.bin", "ab")  # noqa: SIM115 (closed in the finally below)
            array = np.concatenate([np.asarray(ids, dtype=dtype), separator])
            array.tofile(handles[key])
            counts[split][stream] = counts[split].get(stream, 0) + len(array)

    batch = []
    try:
        for doc in selection:
            batch.append(doc)
            if len(batch) == ENCODE_BATCH:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        for handle in handles.values():
            handle.close()
    return counts


def _concatenate(work: Path, split: str, counts: dict[str, int], target: Path) -> dict[str, list[int]]:
    ranges, offset = {}, 0
    with open(target, "wb") as out:
        for stream in sorted(counts):
            with open(work / split / f"{stream}.bin", "rb") as part:
                shutil.copyfileobj(part, out, 1 << 22)
            ranges[stream] = [offset, offset + counts[stream]]
            offset += counts[stream]
    return ranges


def _split_single_document(directory: Path, dtype: np.dtype, val_fraction: float, manifest: dict) -> None:
    """A corpus of one document: the last val_fraction of its tokens becomes validation."""
    tokens = np.fromfile(directory / "train.bin", dtype=dtype)
    cut = int(len(tokens) * (1 - val_fraction))
    tokens[cut:].tofile(directory / "val.bin")
    tokens[:cut].tofile(directory / "train.bin")
    (stream,) = manifest["streams"]["train"]
    manifest["streams"] = {"train": {stream: [0, cut]}, "val": {stream: [0, len(tokens) - cut]}}


def prepare_tokens(data: DataConfig, tokenizer: Tokenizer | None = None) -> tuple[Tokenizer, TokenData]:
    """Tokenize the selected corpus once (or reuse the files its manifest describes)."""
    selection = DocumentSelection(data)
    tokenizer = tokenizer or get_tokenizer(data, selection)
    key = _short_hash(f"{FORMAT_VERSION}|{selection.fingerprint()}|{tokenizer.digest()}|{data.val_fraction}")
    directory = cache_dir(data.cache_dir) / "tokens" / key
    if not (directory / "manifest.json").is_file():
        _build_token_files(selection, tokenizer, data.val_fraction, directory)
    return tokenizer, open_tokens(directory)


def _build_token_files(selection: DocumentSelection, tokenizer: Tokenizer, val_fraction: float, directory: Path) -> None:
    log.info("tokenizing %s into %s", selection.data.source, directory)
    ids = [doc.id for doc in selection]
    val_ids = _split_documents(ids, val_fraction) if len(ids) > 1 else set()
    dtype = token_dtype(tokenizer.vocab_size)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent) as tmp:
        work = Path(tmp)
        counts = _write_streams(selection, tokenizer, val_ids, dtype, work)
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
            "documents": {"train": len(ids) - len(val_ids), "val": len(val_ids)},
            "dropped_by_year": selection.dropped_by_year,
            "dropped_unknown_year": selection.dropped_unknown_year,
            "streams": {split: _concatenate(work, split, counts[split], build / f"{split}.bin") for split in ("train", "val")},
        }
        if not val_ids:
            _split_single_document(build, dtype, val_fraction, manifest)
        manifest["tokens"] = {s: sum(e - b for b, e in manifest["streams"][s].values()) for s in ("train", "val")}
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
    try:
        os.replace(build, directory)
    except OSError:
        if not (directory / "manifest.json").is_file():
            raise


def open_tokens(directory: Path) -> TokenData:
    manifest = json.loads((directory / "manifest.json").read_text())
    dtype = np.dtype(manifest["dtype"])

    def split(name: str) -> TokenSplit:
        count = manifest["tokens"][name]
        tokens = np.memmap(directory / f"{name}.bin", dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype)
        return TokenSplit(tokens, {k: tuple(v) for k, v in manifest["streams"][name].items()})

    return TokenData(split("train"), split("val"), manifest, directory)
