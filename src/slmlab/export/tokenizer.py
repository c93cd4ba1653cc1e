"""slmlab tokenizers as Hugging Face fast tokenizers (`PreTrainedTokenizerFast`), id for id.

    bpe:  the trained `tokenizers` model itself; [UNK] [PAD] [BOS] [EOS] as special tokens
    byte: a byte-level BPE with no merges whose vocabulary is the 256 byte symbols in byte order
          (GPT-2's byte-to-unicode map), so id = byte value
    char: a word-level model over single characters (every character its own pre-token) whose
          decoder fuses them; text with a character outside the vocabulary is refused, as slmlab
          refuses it
    gpt2: r50k_base's ranks as a byte-level BPE (the merges recovered from the ranks), GPT-2's
          pre-tokenisation, <|endoftext|> = 50256

Decoding never "cleans up" spaces: decode(encode(text)) == slmlab's decode.
"""

from __future__ import annotations

from ..data.tokenizers import SPECIAL_TOKENS, Tokenizer


def _backend(tokenizer: Tokenizer):
    """(the `tokenizers.Tokenizer`, special tokens for PreTrainedTokenizerFast)."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    if tokenizer.kind == "bpe":
        special = dict(zip(("unk_token", "pad_token", "bos_token", "eos_token"), SPECIAL_TOKENS))
        return HFTokenizer.from_str(tokenizer.to_json()), special
    if tokenizer.kind == "byte":
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        vocab = {symbol: byte for byte, symbol in bytes_to_unicode().items()}
        backend = HFTokenizer(models.BPE(vocab, [], fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = decoders.ByteLevel()
        return backend, {}
    if tokenizer.kind == "char":
        backend = HFTokenizer(models.WordLevel({c: i for i, c in enumerate(tokenizer.chars)}, unk_token="\x00[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()
        return backend, {}
    if tokenizer.kind == "gpt2":
        from transformers.convert_slow_tokenizer import TikTokenConverter

        vocab, merges = TikTokenConverter().extract_vocab_merges_from_model(str(tokenizer.path))
        backend = HFTokenizer(models.BPE(vocab, merges, fuse_unk=False))
        backend.model.ignore_merges = True  # as tiktoken: a piece that is a token is taken whole
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens(["<|endoftext|>"])
        return backend, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    raise ValueError(f"no Hugging Face form for the '{tokenizer.kind}' tokenizer (export converts bpe, byte, char and gpt2)")


def to_hf_tokenizer(tokenizer: Tokenizer, model_max_length: int):
    """A `PreTrainedTokenizerFast` that encodes and decodes as `tokenizer` does."""
    from transformers import PreTrainedTokenizerFast

    backend, special = _backend(tokenizer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=model_max_length, clean_up_tokenization_spaces=False, **special
    )
