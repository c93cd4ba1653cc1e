"""Bits per byte: every tokenizer knows the UTF-8 bytes each id stands for; validation bpb equals a
naive per-token reference (explicit cross-entropy over the targets, bytes of the decoded targets);
a byte tokenizer's bpb is loss / ln 2; and bpb reaches metrics.jsonl, summary.json, eval, sweep
tables and reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slmlab.cli import main
from slmlab.config import ModelConfig
from slmlab.data.sampling import validation_batches
from slmlab.data.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, GPT2Tokenizer
from slmlab.data.tokens import TokenSplit
from slmlab.model import build_model
from slmlab.runs import RunDir
from slmlab.training import score_validation, train

TEXT = "Ünïcödé at the start, ASCII after: O Romeo, Romeo — wherefore art thou Romeo? 日本語も。\n" * 8


def tokenizers():
    yield ByteTokenizer()
    yield CharTokenizer.train([TEXT])
    yield BPETokenizer.train(iter([TEXT]), 300)


@pytest.mark.parametrize("tokenizer", list(tokenizers()), ids=lambda t: t.kind)
def test_token_bytes_add_up_to_the_text(tokenizer):
    ids = tokenizer.encode(TEXT)
    lengths = tokenizer.token_bytes()
    assert lengths.shape == (tokenizer.vocab_size,)
    assert int(lengths[ids].sum()) == len(TEXT.encode("utf-8"))


def test_gpt2_token_bytes_add_up_to_the_text():
    from slmlab.data.corpora.fetch import fetch_gpt2_tokenizer

    tokenizer = GPT2Tokenizer(fetch_gpt2_tokenizer())
    ids = tokenizer.encode(TEXT + "<|endoftext|>")
    assert int(tokenizer.token_bytes()[ids].sum()) == len(TEXT.encode("utf-8"))  # the special id stands for no text


def naive_bpb(model, split: TokenSplit, tokenizer, seq_len: int, batch_size: int, n_batches: int) -> tuple[float, float]:
    """Per-token cross-entropy from full logits, summed, over the bytes of the decoded targets."""
    nats, tokens, size = 0.0, 0, 0
    for x, y in validation_batches(split, seq_len, batch_size, n_batches):
        logits = model(x)[0].double()
        nats += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        tokens += y.numel()
        for row in y.tolist():  # the UTF-8 bytes of the target text (a byte id is one byte, even mid-character)
            size += len(bytes(row)) if tokenizer.kind == "byte" else len(tokenizer.decode(row).encode("utf-8"))
    return nats / tokens, nats / math.log(2) / size


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), CharTokenizer.train([TEXT])], ids=["byte", "char"])
def test_validation_bpb_equals_a_naive_reference(tokenizer):
    torch.manual_seed(0)
    split = TokenSplit(np.asarray(tokenizer.encode(TEXT), dtype=np.int64), {})
    model = build_model(ModelConfig(n_layer=1, n_head=2, d_model=16, block_size=32, vocab_size=tokenizer.vocab_size)).eval()
    lengths = torch.from_numpy(tokenizer.token_bytes())
    loss, bpb = score_validation(model, split, 32, 4, 3, torch.device("cpu"), token_bytes=lengths)
    naive_loss, naive = naive_bpb(model, split, tokenizer, 32, 4, 3)
    assert loss == pytest.approx(naive_loss, rel=1e-6) and bpb == pytest.approx(naive, rel=1e-6)
    if tokenizer.kind == "byte":
        assert bpb == pytest.approx(loss / math.log(2), rel=1e-12)
    else:  # multi-byte characters: fewer bits per byte than per character
        assert bpb < loss / math.log(2)


def test_bpb_is_comparable_across_tokenizers(tmp_path, text_corpus, make_config):
    """One corpus, three tokenizers: each run reports bits per byte of the same text. Byte's bpb is
    its loss / ln 2; a BPE token covers several bytes, so its bits per token are well above its
    bits per byte; char and byte models land close in bpb."""
    results = {}
    for kind in ("char", "byte", "bpe"):
        cfg = make_config(text_corpus, data={"tokenizer": kind, "vocab_size": 300}, train={"steps": 30, "eval_every": 30})
        cfg.name = kind
        results[kind] = train(cfg, progress=False)
    assert all(math.isfinite(r.val_bpb) and r.val_bpb > 0 for r in results.values())
    assert results["byte"].val_bpb == pytest.approx(results["byte"].val_loss / math.log(2), rel=1e-9)
    assert results["bpe"].val_loss / math.log(2) > 1.5 * results["bpe"].val_bpb  # a BPE token covers several bytes
    assert 0.5 < results["char"].val_bpb / results["byte"].val_bpb < 2


@pytest.mark.slow
def test_bpb_reaches_metrics_summary_eval_sweep_and_report(tmp_path, micro_sweep, capsys):
    assert main(["sweep", str(micro_sweep), "--jobs", "1"]) == 0
    capsys.readouterr()
    sweep_dir = next(p for p in (tmp_path / "runs").iterdir() if (p / "results.md").is_file())
    assert "val bpb" in (sweep_dir / "results.md").read_text()
    run = next(p for p in sweep_dir.iterdir() if (p / "summary.json").is_file())
    assert math.isfinite(json.loads((run / "summary.json").read_text())["val_bpb"])
    assert all("val_bpb" in r for r in RunDir(run).read_metrics() if "val_loss" in r)
    assert main(["eval", str(run), "--batches", "2"]) == 0
    assert "bits/byte" in capsys.readouterr().out
    assert main(["report", str(run)]) == 0
    assert "validation bits per byte" in (run / "report.md").read_text()
