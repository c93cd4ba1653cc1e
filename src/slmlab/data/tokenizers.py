"""Tokenizers: byte, character, trained BPE (Hugging Face `tokenizers`) and GPT-2 (tiktoken).

All share one small interface (`encode`, `encode_batch`, `decode`, `vocab_size`, `eos_id`,
`to_json`) and are saved as one `tokenizer.json` in the run directory: the Hugging Face format
for BPE, a small slmlab JSON object for the others (tokenizer_kinds.py builds them by name and
reads them back).

Documents are joined with `separator_ids()`: the `[EOS]` id where the tokenizer has one, else
the encoding of a blank line. A corpus's documents go through `encode_documents`, where a text
that spells "[EOS]" or "<|endoftext|>" gets the tokens of those characters, never the special
id: the separators slmlab inserts are the only ones, and bits per byte counts every byte of the
text. `encode` (prompts) reads such a spelling as the special token, as Hugging Face tokenizers
and nanoGPT's sampling do (nanoGPT prepares its data with `encode_ordinary` likewise).
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import TokenizerError
from ..files import atomic_write_text, lone_surrogate
from ..interruptible import interruptible
from .pieces import all_pieces, encode_in_pieces, gpt2_pieces

SPECIAL_TOKENS = ("[UNK]", "[PAD]", "[BOS]", "[EOS]")
GPT2_FILE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def token_dtype(vocab_size: int) -> np.dtype:
    """The unsigned integer type that holds every id of a vocabulary (token files, corpus ids)."""
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


def refuse_surrogates(texts: str | list[str]) -> None:
    """Raise TokenizerError when `texts` hold a lone UTF-16 surrogate (what JSON's "\\ud800" and a
    command line's bytes that are not UTF-8 become in Python): no text holds one, so no tokenizer
    can encode it (the backends failed with TypeError or UnicodeEncodeError, or replaced it)."""
    bad = lone_surrogate(texts)
    if bad:
        raise TokenizerError(f"the text holds {bad}, half of a UTF-16 pair and no character; give text UTF-8 can hold")


class Tokenizer(ABC):
    kind: str
    vocab_size: int
    eos_id: int | None = None

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_documents(self, texts: list[str]) -> list[list[int] | np.ndarray]:
        """Corpus text -> each text's ids (a list, or a 1-D integer array), a special token's
        spelling encoded as plain text (tokenizers with special tokens override this; the BPE
        kinds encode a long text in pieces, `pieces.py`)."""
        return self.encode_batch(texts)

    def exact_pieces(self, text: str, size: int) -> Iterator[str]:
        """`text` in pieces of about `size` characters whose `encode_documents`, one after another,
        are the ids of the whole: how a document too long to encode at once (a corpus of one 2 GB
        file) is written a piece at a time. A tokenizer that cannot say where its text may be cut
        keeps it whole (byte and char cut anywhere, the BPE kinds where GPT-2's pattern cuts)."""
        yield text

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str: ...

    def checked_ids(self, ids: Iterable[int]) -> list[int]:
        """`ids` as ints, each the id of a token of this tokenizer (0 .. vocab_size - 1), else a
        TokenizerError: a char table read -1 as its last character, the byte and BPE backends
        failed with an IndexError or ValueError, or dropped the id."""
        ids = [int(i) for i in ids]
        outside = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if outside is not None:
            raise TokenizerError(
                f"token id {outside} is outside this {self.kind} tokenizer's vocabulary (ids 0..{self.vocab_size - 1})"
            )
        return ids

    @abstractmethod
    def to_json(self) -> str: ...

    @abstractmethod
    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64: the UTF-8 bytes of text each id stands for (0 for special ids):
        the denominator of bits per byte, which compares models across tokenizers."""

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def until_eos(self, ids: list[int]) -> list[int]:
        """A continuation's ids before its first end-of-text id (all of them where it has none, or
        the tokenizer has no such id): the end of the document the model writes, as corpus
        documents are joined by that id."""
        return ids[: ids.index(self.eos_id)] if self.eos_id is not None and self.eos_id in ids else ids

    def separator_ids(self) -> list[int]:
        return [self.eos_id] if self.eos_id is not None else self.encode("\n\n")

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer file (crash-safe) -> its path."""
        return atomic_write_text(path, self.to_json())


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: 256 ids, nothing to train; decoding replaces broken sequences with U+FFFD."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        refuse_surrogates(text)
        return list(text.encode("utf-8"))

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's UTF-8 bytes as (n,) token_dtype ids (a list of ints took 8 bytes per byte)."""
        refuse_surrogates(texts)
        return [np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(token_dtype(self.vocab_size)) for text in texts]

    def exact_pieces(self, text: str, size: int) -> Iterator[str]:
        return fixed_pieces(text, size)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(self.checked_ids(ids)).decode("utf-8", errors="replace")

    def to_json(self) -> str:
        return json.dumps({"slmlab_tokenizer": "byte"})

    def token_bytes(self) -> np.ndarray:
        return np.ones(256, dtype=np.int64)


class CharTokenizer(Tokenizer):
    """One id per character of the corpus's character set (sorted by code point)."""

    kind = "char"

    def __init__(self, chars: str):
        if not chars:
            raise TokenizerError("character tokenizer needs a non-empty character set")
        self.chars = "".join(sorted(set(chars)))
        self.vocab_size = len(self.chars)
        self._codes = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        """The character set of `texts`, plus the newline that separates documents."""
        charset: set[str] = {"\n"}
        for text in texts:
            charset.update(text)
        return cls("".join(charset))

    def encode(self, text: str) -> list[int]:
        return self._ids(text).tolist()

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        return [self._ids(text) for text in texts]

    def exact_pieces(self, text: str, size: int) -> Iterator[str]:
        return fixed_pieces(text, size)

    def _ids(self, text: str, chunk: int = 1 << 22) -> np.ndarray:
        """(len(text),) token_dtype ids, `chunk` characters at a time: a 200 MB document went
        through 4-byte codes, int64 ids and a Python list of them at once (4.6 GB)."""
        refuse_surrogates(text)
        ids = np.empty(len(text), dtype=token_dtype(self.vocab_size))
        for start in range(0, len(text), chunk):
            codes = np.frombuffer(text[start : start + chunk].encode("utf-32-le"), dtype=np.uint32)
            found = np.minimum(np.searchsorted(self._codes, codes), len(self._codes) - 1)
            unknown = self._codes[found] != codes
            if unknown.any():
                raise TokenizerError(self._unknown(text, sorted({chr(c) for c in codes[unknown]})))
            ids[start : start + len(codes)] = found
        return ids

    def _unknown(self, text: str, missing: list[str], shown: int = 10) -> str:
        """The characters of `text` outside the vocabulary, each with its code point (an 'é' the
        corpus writes as e + U+0301 looks like the one refused), and what to do: normalize the
        text where the corpus writes the same characters in the other Unicode form."""
        listed = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in missing[:shown])
        more = f" and {len(missing) - shown:,} more" if len(missing) > shown else ""
        known = set(self.chars)
        for form in ("NFC", "NFD"):
            normal = unicodedata.normalize(form, text)
            if normal != text and set(normal) <= known:
                fix = f"the corpus writes them in Unicode normal form {form}: normalize the text to {form} (unicodedata.normalize('{form}', text))"
                break
        else:
            fix = "a char tokenizer knows only its training corpus; use byte or bpe for other text"
        return f"characters not in the tokenizer's vocabulary: {listed}{more} ({fix})"

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in self.checked_ids(ids))

    def to_json(self) -> str:
        return json.dumps({"slmlab_tokenizer": "char", "chars": self.chars}, ensure_ascii=False)

    def token_bytes(self) -> np.ndarray:
        return np.array([len(c.encode("utf-8")) for c in self.chars], dtype=np.int64)


class BPETokenizer(Tokenizer):
    """Byte-level BPE trained with Hugging Face `tokenizers`; [UNK] [PAD] [BOS] [EOS] are ids 0-3.

    The byte-level pre-tokenizer and decoder make decode(encode(text)) == text exactly."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.eos_id = tokenizer.token_to_id("[EOS]")

    @classmethod
    def train(cls, texts: Iterator[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        interruptible(lambda: tok.train_from_iterator(all_pieces(texts), trainer=trainer))  # pre-tokens as whole texts'
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        refuse_surrogates(text)
        return self.tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        refuse_surrogates(texts)
        return [e.ids for e in self.tok.encode_batch(texts)]

    def encode_documents(self, texts: list[str]) -> list[list[int] | np.ndarray]:
        self.tok.encode_special_tokens = True  # "[EOS]" in the text is text
        try:
            if not self._reads_gpt2_pieces():
                return self.encode_batch(texts)
            return encode_in_pieces(self.encode_batch, texts, token_dtype(self.vocab_size))
        finally:
            self.tok.encode_special_tokens = False

    def exact_pieces(self, text: str, size: int) -> Iterator[str]:
        return gpt2_pieces(text, size) if self._reads_gpt2_pieces() else super().exact_pieces(text, size)

    def _reads_gpt2_pieces(self) -> bool:
        """Whether this tokenizer is byte-level BPE behind GPT-2's pattern and nothing else, so
        that `encode_in_pieces` is exact (slmlab trains only such; a hand-edited file may differ)."""
        pre = self.tok.pre_tokenizer
        return (
            type(pre).__name__ == "ByteLevel"
            and getattr(pre, "use_regex", False)  # a library without the getter: encode whole, as before
            and not getattr(pre, "add_prefix_space", True)
            and self.tok.normalizer is None
            and self.tok.post_processor is None
        )

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(self.checked_ids(ids), skip_special_tokens=False)

    def to_json(self) -> str:
        return self.tok.to_str()

    def token_bytes(self) -> np.ndarray:
        """A byte-level token's string has one character per byte (GPT-2's byte-to-unicode map)."""
        special = set(SPECIAL_TOKENS)
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        for token, index in self.tok.get_vocab(with_added_tokens=True).items():
            lengths[index] = 0 if token in special else len(token)
        return lengths


class GPT2Tokenizer(Tokenizer):
    """GPT-2's r50k_base BPE (50 257 ids) through tiktoken, from a local `gpt2.tiktoken` file."""

    kind = "gpt2"
    vocab_size = 50257
    eos_id = 50256

    def __init__(self, path: str | Path):
        try:
            import tiktoken
            from tiktoken.load import load_tiktoken_bpe
        except ImportError:
            raise TokenizerError("the gpt2 tokenizer needs tiktoken: pip install 'slmlab[gpt2]'") from None
        self.path = Path(path)
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if digest != GPT2_FILE_SHA256:
            raise TokenizerError(f"{self.path} is not GPT-2's r50k_base file (sha256 {digest[:12]}...)")
        self.enc = tiktoken.Encoding(
            name="r50k_base",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=load_tiktoken_bpe(str(self.path)),
            special_tokens={"<|endoftext|>": 50256},
            explicit_n_vocab=50257,
        )

    @staticmethod
    def locate(configured: str = "") -> Path:
        """`configured`, else gpt2.tiktoken (or tiktoken's cache name) under $TIKTOKEN_CACHE_DIR, else
        the copy `slmlab data download gpt2` keeps in the slmlab cache."""
        from .corpora.fetch import gpt2_tokenizer_path

        if configured:
            if not Path(configured).expanduser().is_file():
                raise TokenizerError(f"data.tiktoken_file: no file at {configured}")
            return Path(configured).expanduser()
        candidates = []
        cache = os.environ.get("TIKTOKEN_CACHE_DIR")
        if cache:
            url = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
            candidates += [Path(cache) / "gpt2.tiktoken", Path(cache) / hashlib.sha1(url.encode()).hexdigest()]
        candidates.append(gpt2_tokenizer_path())
        for path in candidates:
            if path.is_file():
                return path
        raise TokenizerError(
            "GPT-2 tokenizer file not found: set data.tiktoken_file or TIKTOKEN_CACHE_DIR to gpt2.tiktoken "
            "(shipped as whisper/assets/gpt2.tiktoken in the openai-whisper sdist; `slmlab data download gpt2` fetches it)"
        )

    def encode(self, text: str) -> list[int]:
        refuse_surrogates(text)
        return self.enc.encode(text, allowed_special="all")

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        refuse_surrogates(texts)
        return self.enc.encode_batch(texts, allowed_special="all")

    def encode_documents(self, texts: list[str]) -> list[list[int] | np.ndarray]:
        refuse_surrogates(texts)
        return encode_in_pieces(self.enc.encode_ordinary_batch, texts, token_dtype(self.vocab_size))

    def exact_pieces(self, text: str, size: int) -> Iterator[str]:
        return gpt2_pieces(text, size)

    def decode(self, ids: Iterable[int]) -> str:
        return self.enc.decode(self.checked_ids(ids))

    def to_json(self) -> str:
        return json.dumps({"slmlab_tokenizer": "gpt2", "file": str(self.path.resolve()), "sha256": GPT2_FILE_SHA256})

    def token_bytes(self) -> np.ndarray:
        lengths = [len(self.enc.decode_single_token_bytes(i)) for i in range(self.eos_id)]
        return np.array([*lengths, 0], dtype=np.int64)  # <|endoftext|> stands for no text


def fixed_pieces(text: str, size: int) -> Iterator[str]:
    """`text` cut every `size` characters (a tokenizer of one id or one byte run per character)."""
    return (text[start : start + size] for start in range(0, len(text), size))
