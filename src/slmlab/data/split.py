"""The train/validation split of a corpus: by document, decided by each document's own id.

A document is validation when u(id) < val_fraction, with u(id) = sha1(id) read as a fraction in
[0, 1). So every slice, filter or cross-corpus evaluation of a run sees its documents on the side
they were on in training. Small corpora stay sensible: if no document falls below val_fraction the
one with the smallest u(id) is validation, if every one does the largest is kept for training
(these two choices depend on the selection and are recorded in the token manifest, which eval's
train-overlap count reads); a corpus of a single document is split by position (tokens.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from ..tables import counted


def hash_fraction(doc_id: str) -> float:
    """u(id): the document id's SHA-1 read as a fraction in [0, 1)."""
    return int(hashlib.sha1(doc_id.encode()).hexdigest()[:15], 16) / 16**15


def is_validation(doc_id: str, val_fraction: float) -> bool:
    """The split rule: a function of the document's own id (and val_fraction) alone."""
    return hash_fraction(doc_id) < val_fraction


def splits_by_position(ids: list[str]) -> bool:
    """Whether a selection of documents with these ids is split by position (one document, or
    documents that all share one id: the rule would put every one on one side), not by document."""
    return len(set(ids)) <= 1


def validation_ids(ids: list[str], val_fraction: float) -> set[str]:
    """The validation documents of a selection of more than one document: the rule, with at
    least one document on each side."""
    chosen = {i for i in ids if is_validation(i, val_fraction)}
    if not chosen:
        chosen = {min(ids, key=hash_fraction)}
    if len(chosen) == len(set(ids)):
        chosen.discard(max(ids, key=hash_fraction))
    return chosen


class TrainingSide:
    """The training side of a selection (data/corpora's DocumentSelection), read before its token
    files exist (a tokenizer is trained on it) or without them (is a text among what a run trained
    on?): the documents the split rule leaves in training, or, for a selection split by position
    (one document, or documents that share one id), the first 1 − val_fraction of its characters
    (the split itself is made in tokens, so a few tokens at the cut may fall on either side)."""

    def __init__(self, selection, val_fraction: float):
        self.selection, self.val_fraction = selection, val_fraction
        ids = selection.ids()
        self.by_position = splits_by_position(ids)  # (none: nothing to split)
        self.held_out = set() if self.by_position else validation_ids(ids, val_fraction)
        self.documents = sum(i not in self.held_out for i in ids)

    def texts(self) -> Iterator[str]:
        if not self.by_position:
            yield from (doc.text for doc in self.selection if doc.id not in self.held_out)
            return
        several = self.documents > 1  # the cut is in their concatenation: its length is read first
        left = int(sum(len(doc.text) for doc in self.selection) * (1 - self.val_fraction)) if several else None
        for doc in self.selection:
            keep = int(len(doc.text) * (1 - self.val_fraction)) if left is None else min(left, len(doc.text))
            if keep:
                yield doc.text if keep == len(doc.text) else doc.text[:keep]
            if left is not None:
                left -= keep


def describe_documents(manifest: dict, split: str) -> str:
    """How much of the corpus a split holds, in words: '12 documents', or for a corpus of one
    document (or of documents that all share one id) split by position, 'the first 90% of 1
    document'."""
    count = manifest["documents"][split]
    documents = counted(count, "documents")
    if manifest.get("split_by_position"):
        share = 1 - manifest["val_fraction"] if split == "train" else manifest["val_fraction"]
        return f"the {'first' if split == 'train' else 'last'} {share:.0%} of {documents}"
    return documents


def text_digest(text: str, chunk: int = 1 << 22) -> bytes:
    """SHA-1 of the text's UTF-8 bytes, encoded a chunk at a time (not a copy of a long document)."""
    digest = hashlib.sha1()
    for start in range(0, len(text), chunk):
        digest.update(text[start : start + chunk].encode("utf-8", "surrogatepass"))
    return digest.digest()


def copies_across_split(documents: list[tuple[str, bytes]], val_ids: set[str]) -> list[tuple[str, str]]:
    """(validation id, training id) for each validation document whose text is, byte for byte, a
    training document's (`documents`: (id, digest of the text)). GPL beside its symlink GPL-3, one
    page scraped twice: the split goes by id, so the copies can land on both sides."""
    in_train: dict[bytes, str] = {}
    for doc_id, digest in documents:
        if doc_id not in val_ids:
            in_train.setdefault(digest, doc_id)
    return [(doc_id, in_train[digest]) for doc_id, digest in documents if doc_id in val_ids and digest in in_train]
