"""A long corpus document is encoded (and read by BPE training) in pieces cut where GPT-2's
pre-tokenizer cuts anyway: the ids and the trained tokenizer are those of the whole text, on
adversarial text of several scripts. One 20 MB document took 3.7 GB to encode whole; its pieces
take ~0.4 GB."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slmlab.data import pieces
from slmlab.data.pieces import gpt2_pieces
from slmlab.data.tokenizers import BPETokenizer, GPT2Tokenizer

# White space of every kind beside letters, marks, digits, contractions, punctuation of several
# scripts, special tokens' spellings, and an ideograph of Unicode 15 (unassigned in Python 3.11's
# tables, a letter to the tokenizer's)
ATOMS = [" ", "  ", "   ", "\n", "\n\n", " \n", "\t", "\r\n", "\u00a0", "\u3000", "\x1c", "\u2028", "\u0085",
         "a", "Zed", "the", "é", "e\u0301", "漢字", "1", "2024", "!", "...", "'s", "'ll", "'", "-",
         "[EOS]", "<|endoftext|>", "😀", "\u200b", "中文", "，", "。", "「", "नमस्ते", "_", "(", "١٢", "Ⅻ", "²",
         "\U00031350", "ｓ", "'S", "’"]  # fmt: skip
TEXTS = st.lists(st.sampled_from(ATOMS), max_size=120).map("".join)


@pytest.fixture(scope="module")
def bpe():
    rng = np.random.default_rng(0)
    corpus = ["".join(rng.choice(ATOMS, size=400)) for _ in range(30)]
    return BPETokenizer.train(iter(corpus), vocab_size=420)


def _whole(bpe: BPETokenizer, text: str) -> list[int]:
    bpe.tok.encode_special_tokens = True
    try:
        return bpe.tok.encode(text).ids
    finally:
        bpe.tok.encode_special_tokens = False


@given(TEXTS, st.integers(1, 40))
@settings(max_examples=600, deadline=None)
def test_pieces_join_back_and_have_the_pre_tokens_of_the_whole(text, size):
    """The tokenizer's own GPT-2 pre-tokenizer is the reference: BPE merges only inside pre-tokens,
    so pieces with the whole text's pre-tokens have its ids whatever the merges."""
    from tokenizers import pre_tokenizers

    cut = list(gpt2_pieces(text, size))
    assert "".join(cut) == text and all(cut[:-1])
    assert all(len(piece) >= size for piece in cut[:-1])
    split = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str
    assert [token for piece in cut for token, _ in split(piece)] == [token for token, _ in split(text)]


def test_text_without_spaces_is_cut_at_its_punctuation():
    text = "中文的句子，没有空格。" * 50
    cut = list(gpt2_pieces(text, 10))
    assert len(cut) >= 40 and all(after[0] in "，。" or before[-1] in "，。" for before, after in zip(cut, cut[1:]))


@given(st.lists(TEXTS, min_size=1, max_size=4), st.integers(1, 9), st.integers(1, 30))
@settings(max_examples=150, deadline=None)
def test_bpe_in_pieces_gives_the_ids_of_the_whole_text(bpe, texts, size, batch_chars):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pieces, "PIECE_CHARS", size)
        patch.setattr(pieces, "BATCH_CHARS", batch_chars)
        got = bpe.encode_documents(texts)
    assert [list(ids) for ids in got] == [_whole(bpe, text) for text in texts]


@pytest.mark.network
def test_gpt2_in_pieces_gives_the_ids_of_the_whole_text():
    from slmlab.data.corpora.fetch import fetch_gpt2_tokenizer

    tok = GPT2Tokenizer(fetch_gpt2_tokenizer())
    rng = np.random.default_rng(1)
    texts = ["".join(rng.choice(ATOMS, size=int(n))) for n in rng.integers(0, 300, size=40)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pieces, "PIECE_CHARS", 3)
        patch.setattr(pieces, "BATCH_CHARS", 50)
        got = tok.encode_documents(texts)
    assert [list(ids) for ids in got] == [tok.enc.encode_ordinary(text) for text in texts]


def test_bpe_trained_on_pieces_is_the_tokenizer_trained_on_whole_texts(monkeypatch):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = np.random.default_rng(2)
    corpus = ["".join(rng.choice(ATOMS, size=2000)) for _ in range(3)]
    monkeypatch.setattr(pieces, "PIECE_CHARS", 5)
    ours = BPETokenizer.train(iter(corpus), vocab_size=350)
    reference = Tokenizer(models.BPE(unk_token="[UNK]"))  # the same trainer, given whole texts
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=350,
        special_tokens=["[UNK]", "[PAD]", "[BOS]", "[EOS]"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    reference.train_from_iterator(corpus, trainer=trainer)
    assert ours.tok.to_str() == reference.to_str()
    assert len(list(pieces.all_pieces(corpus))) > 10 * len(corpus)  # it did read pieces


def test_a_bpe_file_with_a_post_processor_is_encoded_whole(bpe, monkeypatch):
    """Pieces are exact only behind GPT-2's pattern alone: a hand-edited file that adds [BOS] to
    every sequence would have got one per piece."""
    from tokenizers import Tokenizer, processors

    edited = BPETokenizer(Tokenizer.from_str(bpe.tok.to_str()))
    edited.tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    monkeypatch.setattr(pieces, "PIECE_CHARS", 2)
    text = "a few words to cut into many pieces"
    (ids,) = edited.encode_documents([text])
    assert list(ids).count(2) == 1 and edited.decode(ids[1:]) == text


def test_a_long_document_reaches_the_encoder_in_bounded_calls(bpe, monkeypatch):
    calls = []
    encode_batch = bpe.encode_batch
    monkeypatch.setattr(bpe, "encode_batch", lambda texts: calls.append(sum(map(len, texts))) or encode_batch(texts))
    monkeypatch.setattr(pieces, "PIECE_CHARS", 64)
    monkeypatch.setattr(pieces, "BATCH_CHARS", 256)
    text = "the 'word' 2024, é! " * 500
    (ids,) = bpe.encode_documents([text])
    assert list(ids) == _whole(bpe, text)
    assert len(calls) > 30 and max(calls) < 256 + 64 + 8  # a batch stops at the piece that reaches BATCH_CHARS


RUN_ATOMS = ["A", "C", "g", "7", "=", "_", " ", "\n", "中", "😀", "é", "'s", ", "]  # runs of one class, and breaks


@given(st.lists(st.tuples(st.sampled_from(RUN_ATOMS), st.integers(1, 30)), max_size=12), st.integers(2, 9))
@settings(max_examples=1000, deadline=None)
def test_a_bpe_trainer_reads_no_pre_token_longer_than_the_limit(runs, longest):
    """A genome, a base64 blob or a rule of '=' is one pre-token, which Hugging Face's BPE trainer
    scans once per merge: a 5 MB one did not finish in 15 minutes. Training pieces cut such runs,
    against the tokenizer's own pre-tokenizer, and give it the pre-tokens of text without them."""
    from tokenizers import pre_tokenizers

    text = "".join(atom * count for atom, count in runs)
    cut = list(pieces.trainable_pieces(text, longest))
    assert "".join(cut) == text
    split = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str
    assert all(end - start <= longest + 1 for piece in cut for _, (start, end) in split(piece))  # + a leading space
    if all(end - start <= longest for _, (start, end) in split(text)):  # then it reads the pre-tokens of the whole
        assert [token for piece in cut for token, _ in split(piece)] == [token for token, _ in split(text)]


def test_a_genome_trains_a_bpe_on_pieces_it_encodes_exactly(monkeypatch):
    from slmlab.data import tokenizers

    read = []
    monkeypatch.setattr(tokenizers, "all_pieces", lambda texts: (read.append(p) or p for p in pieces.all_pieces(texts)))
    genome = "".join(np.random.default_rng(0).choice(list("ACGT"), size=300_000))
    bpe = BPETokenizer.train(iter([genome, "a line of text\n"]), vocab_size=600)
    assert max(map(len, read)) == pieces.TRAINING_RUN_CHARS and "".join(read) == genome + "a line of text\n"
    ids = bpe.encode_documents([genome])[0]
    assert bpe.vocab_size == 600 and len(ids) < len(genome) / 3 and bpe.decode(ids) == genome


@pytest.mark.parametrize("kind", ["byte", "char", "bpe"])
def test_a_document_too_long_to_encode_at_once_is_written_a_piece_at_a_time_with_the_ids_of_the_whole(
    tmp_path, monkeypatch, kind
):
    """A corpus of one large file: its ids (2-4 bytes a character) were held whole beside its text.
    Documents longer than ENCODE_CHARS are encoded a piece at a time and appended as they come;
    the token files are byte for byte those of encoding every document whole, stream by stream.
    (GPT-2 cuts its text as the BPE does: test_gpt2_in_pieces_gives_the_ids_of_the_whole_text.)"""
    from slmlab.config import DataConfig
    from slmlab.data import tokens

    rng = np.random.default_rng(1)
    corpus = tmp_path / "corpus"
    for i, size in enumerate([30, 900, 5, 1200, 40]):  # long documents between short ones, in two streams
        path = corpus / ("prose" if i % 2 else "verse") / f"d{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(rng.choice(ATOMS, size=size)) + "end.")

    def build(cache: str, tokenizer=None):
        data = DataConfig(source=str(corpus), tokenizer=kind, vocab_size=300, cache_dir=str(tmp_path / cache), val_fraction=0.3)
        return tokens.prepare_tokens(data, tokenizer)

    tokenizer, whole = build("whole")
    calls = []
    encode_documents = tokenizer.encode_documents
    monkeypatch.setattr(
        tokenizer, "encode_documents", lambda texts: calls.append(sum(map(len, texts))) or encode_documents(texts)
    )
    monkeypatch.setattr(tokens, "ENCODE_CHARS", 100)
    _, pieced = build("pieced", tokenizer)
    assert max(calls) < 200 and len(calls) > 20  # a cut comes at the first exact place after 100 characters
    for split in ("train", "val"):
        assert np.array_equal(getattr(pieced, split).tokens, getattr(whole, split).tokens)
        assert getattr(pieced, split).streams == getattr(whole, split).streams
    assert pieced.manifest["sha256"] == whole.manifest["sha256"]
