"""A sample printed as it is generated (TextStream) and prompts read from a file: the streamed
pieces join to the text decoded at once, for every tokenizer, whatever the token boundaries."""

from __future__ import annotations

import io
import os
import random
import sys

import pytest
import torch

from slmlab.cli.main import main
from slmlab.data.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer
from slmlab.evals.text_stream import FLUSH_AFTER_IDS, TextStream

TEXT = "ROMEO:\nBut soft, what light — café 😀 naïve 中文\n\nJULIET:\n" + "la " * 40 + "🙂🙃\n"


def streamed(tokenizer, ids, chunk: int = 1) -> list[str]:
    pieces: list[str] = []
    stream = TextStream(tokenizer, pieces.append)
    for start in range(0, len(ids), chunk):
        stream.push(ids[start : start + chunk])
    stream.close()
    return pieces


@pytest.fixture(scope="module")
def tokenizers():
    bpe = BPETokenizer.train(iter([TEXT * 5, "the quick brown fox jumps over the lazy dog\n" * 5]), vocab_size=300)
    return {"byte": ByteTokenizer(), "char": CharTokenizer(TEXT), "bpe": bpe}


@pytest.mark.parametrize("kind", ["byte", "char", "bpe"])
@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_streamed_pieces_join_to_the_text_decoded_at_once(tokenizers, kind, chunk):
    tok = tokenizers[kind]
    ids = tok.encode(TEXT)
    pieces = streamed(tok, ids, chunk)
    assert "".join(pieces) == tok.decode(ids) == TEXT
    assert all("\ufffd" not in piece for piece in pieces)  # no character is printed in halves


def test_bytes_that_are_not_utf8_stream_as_the_whole_decodes_them():
    """Random bytes: lone continuation bytes, cut sequences, overlong forms; every piece written
    stays written (the stream never takes text back) and the pieces join to the whole."""
    tok = ByteTokenizer()
    rng = random.Random(0)
    for trial in range(50):
        ids = [rng.choice([rng.randrange(256), rng.randrange(0x80, 0xC0), 0xF0, 0xE2, 0x41]) for _ in range(200)]
        assert "".join(streamed(tok, ids, chunk=1 + trial % 4)) == tok.decode(ids)


def test_a_long_line_is_flushed_in_bounded_pieces():
    """Work per token stays bounded on a line without a newline: the ids decoded again are at most
    FLUSH_AFTER_IDS."""
    decoded_lengths = []

    class Counting(ByteTokenizer):
        def decode(self, ids):
            ids = list(ids)
            decoded_lengths.append(len(ids))
            return super().decode(ids)

    text = "a" * 1000 + "é" * 300
    pieces = streamed(Counting(), list(text.encode()))
    assert "".join(pieces) == text and max(decoded_lengths) <= FLUSH_AFTER_IDS + 1


@pytest.fixture
def tiny_run(tmp_path, micro_toml):
    assert main(["train", str(micro_toml), "--name", "r", "--no-progress"]) == 0
    return tmp_path / "runs" / "r"


def test_generate_streams_one_sample_and_reads_prompts_from_files(tiny_run, tmp_path, capsys, monkeypatch):
    """One sample is printed as it comes (many writes) and equals the text generate_texts returns;
    --prompt-file gives the same text as --prompt; '-' reads standard input."""
    from slmlab.evals.score import generate_texts, load_for_inference

    cfg, model, tokenizer, device = load_for_inference(str(tiny_run), "cpu", False)
    pieces: list[str] = []
    (text,) = generate_texts(model, tokenizer, cfg, device, "ROMEO:", 1, 40, seed=3, write=pieces.append)
    assert len(pieces) > 10 and "".join(pieces) == text and text.startswith("ROMEO:")
    two = generate_texts(model, tokenizer, cfg, device, "ROMEO:", 2, 40, seed=3, write=pieces.append)
    assert len(two) == 2 and "".join(pieces) == text  # several samples are not streamed

    argv = ["generate", str(tiny_run), "--max-new-tokens", "40", "--seed", "3"]
    assert main([*argv, "--prompt", "ROMEO:\n"]) == 0
    by_argument = capsys.readouterr().out
    assert by_argument.startswith("ROMEO:\n") and len(by_argument) > 40
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_bytes("\ufeffROMEO:\n".encode())  # a byte order mark is not part of the prompt
    assert main([*argv, "--prompt-file", str(prompt_file)]) == 0
    assert capsys.readouterr().out == by_argument
    prompt_file.write_bytes(b"ROMEO:\r\n")  # saved on Windows: '\r' is no character of a corpus read from text files
    assert main([*argv, "--prompt-file", str(prompt_file)]) == 0
    assert capsys.readouterr().out == by_argument
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ROMEO:\n")))
    assert main([*argv, "--prompt-file", "-"]) == 0
    assert capsys.readouterr().out == by_argument


def test_bad_prompt_files_are_one_line_errors(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("ROMcafé".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "wide.txt").write_bytes("ROMEO:".encode("utf-16-le"))  # no byte-order mark: valid UTF-8, NUL beside each letter
    cases = [
        (["--prompt-file", "wide.txt"], "--prompt-file wide.txt is not text: 50% of its first 12 bytes are NUL, as in UTF-16"),
        (["--prompt-file", "missing.txt"], "--prompt-file missing.txt: no such file"),
        (["--prompt-file", "."], "--prompt-file .: a folder, not a file"),
        (["--prompt-file", os.devnull], f"--prompt-file {os.devnull}: a device, not a file; give a file ('-': standard input)"),
        (["--prompt-file", "latin1.txt"], "--prompt-file latin1.txt is not UTF-8 text (bad byte 0xe9 on line 1, byte offset 6)"),
        (["--prompt-file", "empty.txt"], "the prompt is empty"),
        (["--prompt", "x", "--prompt-file", "empty.txt"], "not allowed with argument"),
        ([], "one of the arguments --prompt --prompt-file is required"),
    ]
    for given, message in cases:
        for verb in (["generate", str(tiny_run)], ["viz", "attention", str(tiny_run)]):
            try:
                code = main([*verb, *given])
            except SystemExit as exit:  # argparse's own mistakes
                code = exit.code
            assert code == 2
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1, (given, err)


def scripted(model, rows: list[list[int]]):
    """Make greedy decoding emit rows[r][k] at step k of row r (a forward hook on the LM head)."""
    step = {"k": 0}

    def hook(module, args, logits):
        logits = torch.zeros_like(logits)
        for r, row in enumerate(rows[: logits.shape[0]]):
            logits[r, -1, row[min(step["k"], len(row) - 1)]] = 100.0
        step["k"] += 1
        return logits

    return model.head.register_forward_hook(hook)


def test_generation_ends_where_the_model_ends_its_document(tokenizers):
    """A BPE run's documents are joined by [EOS]: generate, prompt suites and persona continuations
    stop there (the text after it is another document), unless told to sample on."""
    from slmlab.config import ModelConfig, RunConfig
    from slmlab.evals.prompts import Prompt, run_suite
    from slmlab.evals.score import generate_texts
    from slmlab.model import build_model

    tok = tokenizers["bpe"]
    a, b, c, eos = tok.encode("a")[0], tok.encode("b")[0], tok.encode("c")[0], tok.eos_id
    cfg = RunConfig(model=ModelConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, d_model=16, block_size=32))
    model = build_model(cfg.model).eval()
    device = torch.device("cpu")

    def generate(samples, rows, **options):
        handle = scripted(model, rows)
        try:
            return generate_texts(model, tok, cfg, device, "la", samples, 6, temperature=0, **options)
        finally:
            handle.remove()

    pieces: list[str] = []
    assert generate(1, [[a, b, eos, c, c, c]], write=pieces.append) == ["laab"]
    assert "".join(pieces) == "laab"
    assert generate(1, [[a, b, eos, c, c, c]], stop_at_eos=False) == ["laab[EOS]ccc"]
    assert generate(2, [[a, b, eos, c, c, c], [a, b, c, b, eos, c]]) == ["laab", "laabcb"]  # each row at its own end
    handle = scripted(model, [[a, eos, c, c], [b, c, c, c]])
    try:
        results = run_suite(model, tok, [Prompt("one", "la", 4, 0.0), Prompt("two", "la", 4, 0.0, seed=1)], device, 32)
    finally:
        handle.remove()
    assert [r["completion"] for r in results] == ["a", "bccc"]
    from slmlab.persona.evaluate import continuations

    handle = scripted(model, [[b, eos, c, c], [a, b, c, b]])  # sampled at temperature 0.8: the scripted token dominates
    try:
        assert continuations(model, tok, ["la", "la"], 4, 0, device) == ["b", "abcb"]
    finally:
        handle.remove()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_is_read_as_a_prompt_or_text_file(tiny_run, tmp_path, capsys):
    """A shell's process substitution (--text <(zcat book.txt.gz)) is a pipe, not a regular file:
    it was refused as 'no such file'."""
    import threading

    pipe = tmp_path / "pipe"
    argv = ["generate", str(tiny_run), "--max-new-tokens", "5", "--seed", "0"]
    assert main([*argv, "--prompt", "ROMEO:"]) == 0
    by_argument = capsys.readouterr().out
    os.mkfifo(pipe)
    writer = threading.Thread(target=lambda: pipe.write_text("ROMEO:"))
    writer.start()
    assert main([*argv, "--prompt-file", str(pipe)]) == 0
    writer.join()
    assert capsys.readouterr().out == by_argument


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_or_device_where_a_file_is_read_again_is_refused_by_its_kind(tiny_run, micro_toml, tmp_path, capsys):
    """A config, a prompt suite or a corpus given as <(cat x) or /dev/null was 'not found', or
    'neither a built-in corpus nor an existing file': it is there, but read more than once (a
    corpus) or named by its file (a config names the run, a suite's suffix says how to read it)."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # nothing writes it: it must be refused before anything opens it
    for given, kind in ((str(pipe), "pipe"), (os.devnull, "device")):
        cases = [
            (["train", given], f"{given} is a {kind}, not a config file: give a .toml file"),
            (["sweep", given], f"{given} is a {kind}, not a config file"),
            (["prompts", str(tiny_run), "--suite", given], f"{given} is a {kind}, not a prompt suite"),
            (["train", str(micro_toml), "--data.source", given], f"data.source: '{given}' is a {kind}, not a corpus file"),
        ]
        for argv, says in cases:
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert says in err and err.count("\n") == 1, err


def test_standard_input_from_a_terminal_says_how_to_end_it(tiny_run, monkeypatch, capsys):
    """`--prompt-file -` typed at a terminal waited in silence for text and Ctrl-D."""

    class Terminal(io.TextIOWrapper):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(io.BytesIO(b"ROMEO:")))
    assert main(["generate", str(tiny_run), "--prompt-file", "-", "--max-new-tokens", "2"]) == 0
    assert "--prompt-file -: reading the text from the terminal; end it with Ctrl-D" in capsys.readouterr().err
