"""Tokenizers by name: `train_tokenizer` builds the one `data.tokenizer` names
(registry.TOKENIZERS), and `load_tokenizer` reads one back from its `tokenizer.json`: the Hugging
Face format for BPE, else {"slmlab_tokenizer": kind, ...}, read by the reader registered for that
kind (registry.TOKENIZER_FILES). A plugin tokenizer registers both; one whose file does not read
back as itself is refused when it is trained, before a run is written that nothing could read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from ..config import DataConfig
from ..config.checks import is_whole_number
from ..errors import TokenizerError
from ..files import read_text
from ..registry import TOKENIZER_FILES, TOKENIZERS
from .pieces import gpt2_pieces
from .tokenizers import SPECIAL_TOKENS, BPETokenizer, ByteTokenizer, CharTokenizer, GPT2Tokenizer, Tokenizer, fixed_pieces

log = logging.getLogger("slmlab")


def is_tokenizer_json(text: str) -> bool:
    """Whether `text` is a tokenizer file as slmlab writes them: its own kinds, or a Hugging Face
    tokenizers JSON of its BPE (slmlab's special tokens, and only those). A pretrained model's
    tokenizer.json is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    if not isinstance(value, dict):
        return False
    added = value.get("added_tokens")
    specials = [token.get("content") for token in added if isinstance(token, dict)] if isinstance(added, list) else None
    return "slmlab_tokenizer" in value or ("model" in value and specials == list(SPECIAL_TOKENS))


def train_tokenizer(data: DataConfig, texts: Iterable[str]) -> Tokenizer:
    """Build the tokenizer `data.tokenizer` names (registry.TOKENIZERS); `texts` is read only by
    the tokenizers that learn from text (char, bpe)."""
    tokenizer = TOKENIZERS[data.tokenizer](data, texts)
    if not isinstance(tokenizer, Tokenizer):
        raise TokenizerError(
            f"data.tokenizer = {data.tokenizer!r} built a {type(tokenizer).__name__}, not a tokenizer: subclass "
            "slmlab.data.tokenizers.Tokenizer (encode, decode, to_json, token_bytes)"
        )
    check_readable(plain_vocab_size(tokenizer, data.tokenizer), data.tokenizer)
    return tokenizer


def training_pieces(kind: str, text: str, size: int) -> Iterable[str]:
    """`text` as a tokenizer of `kind` is trained on it: whole, or where longer than `size`
    characters, for the built-in kinds that learn from text, in pieces that train it as the whole
    does (char's character set from any cut; BPE's words where GPT-2's pattern cuts, as its
    pre-tokenizer does), so that a one-document corpus is read, and counted, a piece at a time."""
    if len(text) <= size or kind not in ("char", "bpe"):
        return (text,)
    return fixed_pieces(text, size) if kind == "char" else gpt2_pieces(text, size)


def plain_vocab_size(tokenizer: Tokenizer, kind: str) -> Tokenizer:
    """`tokenizer`, its vocab_size a whole number > 0 and a Python int (a plugin's numpy count is
    made one: it is written into JSON files), else a TokenizerError naming the kind."""
    size = getattr(tokenizer, "vocab_size", None)
    if not is_whole_number(size, 1):
        raise TokenizerError(f"the {kind!r} tokenizer's vocab_size is {size!r}: give the number of its ids, a whole number > 0")
    if type(size) is not int:
        try:
            tokenizer.vocab_size = int(size)
        except AttributeError:  # a property without a setter
            raise TokenizerError(f"the {kind!r} tokenizer's vocab_size is a {type(size).__name__}: give a Python int") from None
    return tokenizer


def _trained_bpe(data: DataConfig, texts: Iterable[str]) -> BPETokenizer:
    """BPE trained to data.vocab_size ids, or to fewer where the corpus runs out of pairs to
    merge: said, since a run that asked for 8,192 would otherwise be compared as if it had them."""
    tokenizer = BPETokenizer.train(iter(texts), data.vocab_size)
    if (size := tokenizer.vocab_size) < data.vocab_size:
        log.warning(
            f"data.vocab_size = {data.vocab_size}, but the corpus has pairs to merge for only {size} BPE tokens: the "
            f"tokenizer, and the model's vocabulary, hold {size}; give more text, or data.vocab_size <= {size}"
        )
    return tokenizer


BUILT_IN_TOKENIZERS = {"byte", "char", "bpe", "gpt2"}  # each registered under its Tokenizer's kind
TOKENIZERS.register("byte", lambda data, texts: ByteTokenizer())
TOKENIZERS.register("char", lambda data, texts: CharTokenizer.train(texts))
TOKENIZERS.register("bpe", _trained_bpe)
TOKENIZERS.register("gpt2", lambda data, texts: GPT2Tokenizer(GPT2Tokenizer.locate(data.tiktoken_file)))
TOKENIZER_FILES.register("byte", lambda spec: ByteTokenizer())
TOKENIZER_FILES.register("char", lambda spec: CharTokenizer(_text_entry(spec, "chars")))
TOKENIZER_FILES.register("gpt2", lambda spec: GPT2Tokenizer(_text_entry(spec, "file")))


def _text_entry(spec: dict, field: str) -> str:
    """A tokenizer file's string entry `field`, else a TokenizerError naming it."""
    value = spec.get(field)
    if not isinstance(value, str):
        raise TokenizerError(
            f"tokenizer.json ({spec['slmlab_tokenizer']}) has no valid '{field}' entry; delete it or re-run "
            "`slmlab tokenizer train`"
        )
    return value


def tokenizer_from_json(text: str) -> Tokenizer:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError:
        raise TokenizerError("tokenizer.json is not valid JSON; delete it or re-run `slmlab tokenizer train`") from None
    kind = spec.get("slmlab_tokenizer") if isinstance(spec, dict) else None
    if kind is not None:
        return _read_slmlab_tokenizer(kind, spec)
    if isinstance(spec, dict) and "model" in spec:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            return BPETokenizer(HFTokenizer.from_str(text))
        except Exception as err:  # the Rust library's parse errors have no finer Python type
            raise TokenizerError(
                f"tokenizer.json is not a valid Hugging Face tokenizer ({str(err).splitlines()[0][:80]}); "
                "delete it or re-run `slmlab tokenizer train`"
            ) from None
    raise TokenizerError("tokenizer.json is neither an slmlab nor a Hugging Face tokenizer file")


def _read_slmlab_tokenizer(kind, spec: dict) -> Tokenizer:
    """The tokenizer an {"slmlab_tokenizer": kind, ...} file holds, read by the reader registered
    for its kind (registry.TOKENIZER_FILES: the built-in kinds below, a plugin's own)."""
    reader = TOKENIZER_FILES.get(kind) if isinstance(kind, str) else None
    if reader is None:
        raise TokenizerError(
            f"tokenizer.json holds a {kind!r} tokenizer, which nothing loaded reads: name the plugin that "
            "registers its reader (registry.TOKENIZER_FILES) in the config's plugins"
        )
    try:
        return plain_vocab_size(reader(spec), kind)
    except TokenizerError:  # the reader's own one line
        raise
    except (KeyError, TypeError, ValueError, IndexError) as err:  # a plugin reader's view of a damaged file
        raise TokenizerError(
            f"tokenizer.json ({kind}) cannot be read ({type(err).__name__}: {err}); delete it or re-run `slmlab tokenizer train`"
        ) from None


def check_readable(tokenizer: Tokenizer, name: str) -> None:
    """The file `tokenizer` writes reads back as the same tokenizer (a run is read back from it):
    else a TokenizerError naming what a plugin tokenizer lacks."""
    try:
        again = tokenizer_from_json(tokenizer.to_json())
    except TokenizerError as err:
        raise TokenizerError(f"data.tokenizer = {name!r} writes a file slmlab cannot read back: {err}") from None
    if again.digest() != tokenizer.digest():
        raise TokenizerError(
            f"data.tokenizer = {name!r} reads back from its file as another tokenizer (its to_json and its "
            "registered reader disagree)"
        )


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"no tokenizer at {path}")
    text = read_text(path, "tokenizer", TokenizerError, "delete it or re-run `slmlab tokenizer train`")
    try:
        return tokenizer_from_json(text)
    except TokenizerError as err:
        raise TokenizerError(f"{path}: {err}") from None
