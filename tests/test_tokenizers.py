"""Tokenizers: exact round trips (with special tokens), saving and loading, clear errors."""

from __future__ import annotations

import pytest

from slmlab.config import DataConfig
from slmlab.data.tokenizer_kinds import load_tokenizer, train_tokenizer
from slmlab.data.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, GPT2Tokenizer, TokenizerError

TEXT = "ROMEO:\n  But soft!  what light, through yonder window breaks?\n\n\tIt is the east — and Juliet is the sun.\n"


@pytest.fixture(scope="module")
def bpe():
    corpus = [TEXT * 3, "To be, or not to be, that is the question.\n" * 5, "café naïve résumé 1961\n"]
    return BPETokenizer.train(iter(corpus * 20), vocab_size=400)


def test_byte_tokenizer_round_trips_any_text():
    tok = ByteTokenizer()
    ids = tok.encode(TEXT)
    assert tok.vocab_size == 256 and max(ids) < 256 and tok.decode(ids) == TEXT
    assert tok.separator_ids() == list(b"\n\n")


def test_char_tokenizer_round_trips_and_rejects_unknown_characters():
    tok = CharTokenizer.train([TEXT])
    assert tok.vocab_size == len(set(TEXT)) and "\n" in tok.chars and tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.encode(" !") == [sorted(set(TEXT)).index(" "), sorted(set(TEXT)).index("!")]
    with pytest.raises(TokenizerError, match="not in the tokenizer's vocabulary: 'Z'"):
        tok.encode("Zebra")


@pytest.mark.parametrize("corpus_form, text_form", [("NFD", "NFC"), ("NFC", "NFD")])
def test_char_tokenizer_names_the_unicode_form_a_refused_text_would_fit_in(corpus_form, text_form):
    """A corpus that writes 'é' as e + U+0301 refused the 'é' a keyboard types with a message
    showing the very character the corpus is full of: each refused character now has its code
    point, and the message says which normal form the corpus uses."""
    import unicodedata

    words = "café, élève, fenêtre, où"
    tok = CharTokenizer.train([unicodedata.normalize(corpus_form, words)])
    text = unicodedata.normalize(text_form, "où, café")
    with pytest.raises(TokenizerError, match=f"U\\+.*normal form {corpus_form}: normalize the text to {corpus_form}"):
        tok.encode(text)
    assert tok.decode(tok.encode(unicodedata.normalize(corpus_form, text))) == unicodedata.normalize(corpus_form, text)
    with pytest.raises(TokenizerError, match=r"'Z' \(U\+005A\) \(a char tokenizer knows only its training corpus"):
        tok.encode(unicodedata.normalize(corpus_form, "Zé"))  # no normal form holds Z: the usual advice
    with pytest.raises(TokenizerError, match=r"\(U\+5341\) and 3 more"):
        tok.encode("一二三四五六七八九十百千万")


def test_bpe_restores_spacing_and_special_tokens(bpe):
    assert bpe.vocab_size <= 400 and [bpe.tok.token_to_id(t) for t in ("[UNK]", "[PAD]", "[BOS]", "[EOS]")] == [0, 1, 2, 3]
    ids = bpe.encode(TEXT)
    assert len(ids) < len(TEXT.encode()) and bpe.decode(ids) == TEXT
    with_special = "[BOS]first doc[EOS]second  doc[EOS]"
    ids = bpe.encode(with_special)
    assert ids[0] == 2 and ids.count(3) == 2 and bpe.decode(ids) == with_special
    assert bpe.separator_ids() == [3]


ODD = "[BOS]a doc that spells [EOS] and <|endoftext|>, é, 😀, e\u0301[PAD][UNK]"


@pytest.mark.parametrize("kind", ["byte", "char", "bpe"])
def test_corpus_text_is_text_and_its_tokens_count_every_byte(bpe, kind):
    """A corpus that spells a special token ("[EOS]" in a tokenizer tutorial, "<|endoftext|>" in
    a web dump) got the special id: a document boundary slmlab never put there, and bits per
    byte counted 0 bytes for its 5-13. Documents encode as plain text, whose token byte lengths
    add up to the text's UTF-8 length; prompts (`encode`) still read the spelling as the token."""
    tok = {"byte": ByteTokenizer(), "char": CharTokenizer.train([ODD]), "bpe": bpe}[kind]
    (ids,) = tok.encode_documents([ODD])
    assert tok.decode(ids) == ODD and int(tok.token_bytes()[ids].sum()) == len(ODD.encode("utf-8"))
    if kind == "bpe":
        assert not {0, 1, 2, 3} & set(ids) and bpe.encode("[EOS]") == [3]


@pytest.mark.parametrize("make", [ByteTokenizer, lambda: CharTokenizer.train([TEXT])])
def test_saved_tokenizers_load_back_identically(tmp_path, bpe, make):
    for tok in (make(), bpe):
        tok.save(tmp_path / "tokenizer.json")
        loaded = load_tokenizer(tmp_path / "tokenizer.json")
        assert type(loaded) is type(tok) and loaded.encode(TEXT) == tok.encode(TEXT) and loaded.digest() == tok.digest()


def test_corrupt_or_missing_tokenizer_file_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer at"):
        load_tokenizer(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load_tokenizer(tmp_path / "bad.json")


def test_gpt2_tokenizer_needs_its_local_file(tmp_path, monkeypatch):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    with pytest.raises(TokenizerError, match="data.tiktoken_file: no file at"):
        train_tokenizer(DataConfig(tokenizer="gpt2", tiktoken_file=str(tmp_path / "missing.tiktoken")), [])
    (tmp_path / "wrong.tiktoken").write_text("not the gpt2 file")
    with pytest.raises(TokenizerError, match="is not GPT-2's r50k_base file"):
        GPT2Tokenizer(tmp_path / "wrong.tiktoken")


@pytest.mark.network
def test_gpt2_tokenizer_matches_known_ids():
    from slmlab.data.corpora.fetch import fetch_gpt2_tokenizer

    tok = GPT2Tokenizer(fetch_gpt2_tokenizer())
    assert tok.vocab_size == 50257 and tok.encode("Hello world") == [15496, 995]
    assert tok.encode("<|endoftext|>") == [50256] and tok.decode(tok.encode(TEXT)) == TEXT
    (ids,) = tok.encode_documents([ODD])
    assert 50256 not in ids and int(tok.token_bytes()[ids].sum()) == len(ODD.encode("utf-8"))


def tokenizer_of(kind: str, bpe):
    """A built-in tokenizer of each kind: bytes, a char table of "ab", the trained BPE, GPT-2."""
    from slmlab.data.corpora.fetch import fetch_gpt2_tokenizer

    return {
        "byte": ByteTokenizer,
        "char": lambda: CharTokenizer("ab"),
        "bpe": lambda: bpe,
        "gpt2": lambda: GPT2Tokenizer(fetch_gpt2_tokenizer()),
    }[kind]()


@pytest.mark.parametrize("kind", ["byte", "char", "bpe", "gpt2"])
def test_half_a_surrogate_pair_is_a_clear_error_for_every_tokenizer(kind, bpe):
    """'\\ud800' (a JSON escape, or a command line's bytes that are not UTF-8) is no character:
    the backends raised TypeError or UnicodeEncodeError, or tiktoken replaced it in silence."""
    tok = tokenizer_of(kind, bpe)
    for encode in (tok.encode, lambda text: tok.encode_batch(["a", text]), lambda text: tok.encode_documents([text])):
        with pytest.raises(TokenizerError, match=r"the text holds \\ud800, half of a UTF-16 pair"):
            encode("a\ud800b")
    assert tok.encode_batch(["ab", "ba"]) == [tok.encode("ab"), tok.encode("ba")]


@pytest.mark.parametrize("kind", ["byte", "char", "bpe", "gpt2"])
def test_an_id_outside_the_vocabulary_is_a_clear_error_for_every_tokenizer(kind, bpe):
    """A char table read -1 as its last character and failed on 10**6 with an IndexError; bytes()
    and tiktoken raised their own errors."""
    tok = tokenizer_of(kind, bpe)
    for outside in (-1, tok.vocab_size, 10**6):
        with pytest.raises(TokenizerError, match=rf"token id {outside} is outside this {kind} tokenizer's vocabulary"):
            tok.decode([0, outside])
    assert tok.decode(tok.encode("ab")) == "ab"


def test_a_padded_vocabulary_reads_out_text_tokens_only(micro_toml, tmp_path, capsys):
    """A model whose embedding is wider than its tokenizer (model.vocab_size > the tokenizer's):
    the logit lens and attribution's default answer took the argmax over every id, and an extra
    id ended in "IndexError: string index out of range"."""
    from slmlab.cli import main

    assert main(["train", str(micro_toml), "--name", "padded", "--model.vocab_size", "4096", "--train.steps", "3"]) == 0
    run = str(tmp_path / "runs" / "padded")
    assert main(["viz", "lens", run, "--prompt", "the cat sat", "--out", str(tmp_path / "lens")]) == 0
    assert main(["viz", "attribute", run, "--prompt", "the cat sat", "--out", str(tmp_path / "attr")]) == 0


def test_tokenizer_train_replaces_its_own_output_only(micro_toml, tmp_path, capsys):
    """Rerunning replaces the file it wrote (char or BPE); a pretrained model's tokenizer.json,
    also a Hugging Face tokenizers JSON, was replaced in silence like any other tokenizer file."""
    import json

    from slmlab.cli import main

    out = tmp_path / "tokenizer.json"
    for kind in ("char", "char", "bpe", "bpe", "char"):
        extra = ["--data.vocab_size", "300"] if kind == "bpe" else []
        assert main(["tokenizer", "train", str(micro_toml), "--data.tokenizer", kind, *extra, "--out", str(out)]) == 0
    pretrained = {"version": "1.0", "added_tokens": [{"id": 0, "content": "<|endoftext|>"}], "model": {"type": "BPE"}}
    for foreign in (json.dumps(pretrained), "my notes\n"):
        out.write_text(foreign)
        assert main(["tokenizer", "train", str(micro_toml), "--out", str(out)]) == 2
        assert "already holds a file that is not a tokenizer file" in capsys.readouterr().err
        assert out.read_text() == foreign


def test_char_and_byte_documents_are_compact_arrays_equal_to_encode():
    """A 200 MB one-document corpus went through int64 ids and a Python list per character (4.6 GB
    for char, 2.9 GB for byte); documents now come as token-sized arrays, read a chunk at a time."""
    import numpy as np

    text = TEXT * 7 + "é😀"
    char = CharTokenizer.train([text])
    (ids,) = char.encode_documents([text])
    assert ids.dtype == np.uint16 and ids.tolist() == char.encode(text)
    assert char._ids(text, chunk=5).tolist() == char.encode(text)  # chunks join exactly
    with pytest.raises(TokenizerError, match="not in the tokenizer's vocabulary: 'Z'"):
        char._ids(text + "Z", chunk=5)  # an unknown character in the last chunk
    byte = ByteTokenizer()
    (ids,) = byte.encode_documents([text])
    assert ids.dtype == np.uint16 and ids.tolist() == byte.encode(text)


@pytest.mark.parametrize("size", [0, -3, 2.5, None, True])
def test_a_tokenizer_without_a_whole_vocab_size_is_refused_and_a_numpy_count_made_an_int(size):
    """A plugin tokenizer's np.int64 vocab_size failed writing the token manifest (not JSON
    serializable); a missing or fractional one failed later, inside torch."""
    import numpy as np

    from slmlab.data.tokenizer_kinds import plain_vocab_size

    tokenizer = ByteTokenizer()
    tokenizer.vocab_size = size
    with pytest.raises(TokenizerError, match=f"the 'mine' tokenizer's vocab_size is {size!r}: give the number of its ids"):
        plain_vocab_size(tokenizer, "mine")
    tokenizer.vocab_size = np.int64(256)
    assert type(plain_vocab_size(tokenizer, "mine").vocab_size) is int


def test_a_bpe_vocabulary_the_corpus_cannot_fill_is_warned_of(caplog):
    """BPE stops merging when no pair is left: 'vocab_size = 5000' on a small corpus gave a few hundred
    ids in silence, and two runs 'at 4k and 8k' compared one tokenizer with itself."""
    texts = ["the cat sat on the mat. " * 50]
    with caplog.at_level("WARNING", logger="slmlab"):
        small = train_tokenizer(DataConfig(tokenizer="bpe", vocab_size=5000), texts)
    assert small.vocab_size < 5000
    assert f"data.vocab_size = 5000, but the corpus has pairs to merge for only {small.vocab_size} BPE tokens" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="slmlab"):
        assert train_tokenizer(DataConfig(tokenizer="bpe", vocab_size=small.vocab_size), texts).vocab_size == small.vocab_size
    assert "pairs to merge" not in caplog.text
