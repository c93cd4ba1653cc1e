"""int8 inference: the quantised model is smaller, runs, and its perplexity stays within 3% of the
fp32 model's; generate and eval accept it; a corrupt int8 file is a clear error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from slmlab.analysis.quantize import Int8Linear, quantize_int8
from slmlab.analysis.tiny_models import models_to_check, tiny_config
from slmlab.cli import main
from slmlab.config import load_config
from slmlab.model import build_model
from slmlab.training import train


def test_int8_model_runs_and_keeps_perplexity(text_corpus, make_config, capsys):
    cfg = make_config(text_corpus, model={"d_model": 64, "n_layer": 2}, train={"steps": 60, "lr": 1e-2, "checkpoint_every": 0})
    run = train(cfg, progress=False).run_dir
    assert main(["quantize", str(run), "--int8", "--batches", "4"]) == 0
    table = capsys.readouterr().out
    speed = r"([\d,.]+) \(([\d,.]+)–([\d,.]+)\)"  # median (slowest–fastest) of repeated runs
    rows = {m.group(1): m for m in re.finditer(rf"\| (fp32|int8)\s+\| ([\d.]+) (KiB|MiB)\s+\| {speed}\s+\| ([\d.]+)", table)}
    fp32_ppl, int8_ppl = float(rows["fp32"].group(7)), float(rows["int8"].group(7))
    for row in rows.values():
        median, slowest, fastest = (float(row.group(i).replace(",", "")) for i in (4, 5, 6))
        assert slowest <= median <= fastest
    assert abs(int8_ppl - fp32_ppl) / fp32_ppl < 0.03, table
    change = re.search(r"\| int8 .*\| ([+-][\d.]+)% \[([+-][\d.]+), ([+-][\d.]+)\] +\|", table)  # paired over the batches
    assert change and float(change.group(2)) <= float(change.group(1)) <= float(change.group(3)), table
    assert float(change.group(1)) == __import__("pytest").approx(100 * (int8_ppl / fp32_ppl - 1), abs=0.02)
    assert (run / "model_int8.pt").stat().st_size < (run / "final.safetensors").stat().st_size
    assert main(["eval", str(run), "--int8", "--json", "--batches", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["ppl"] == __import__("pytest").approx(int8_ppl, rel=1e-3)
    assert main(["eval", str(run), "--int8", "--rope-scale", "2"]) == 2
    assert "--rope-scale does not apply to the saved --int8 model" in capsys.readouterr().err
    assert main(["generate", str(run), "--int8", "--prompt", "ROMEO", "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO")
    assert main(["report", str(run)]) == 0  # the report card picks the comparison up
    assert "## int8 inference" in (run / "report.md").read_text() and f"{int8_ppl:.3f}" in (run / "report.md").read_text()
    capsys.readouterr()
    intact = (run / "model_int8.pt").read_bytes()
    flipped = bytearray(intact)
    flipped[len(intact) // 2 : len(intact) // 2 + 64] = bytes(b ^ 0xFF for b in flipped[len(intact) // 2 : len(intact) // 2 + 64])
    (run / "model_int8.pt").write_bytes(bytes(flipped))  # torch.load reads it without a word: wrong weights
    assert main(["eval", str(run), "--int8", "--batches", "1"]) == 2
    assert "model_int8.pt is damaged (its SHA-256 does not match" in capsys.readouterr().err
    (run / "model_int8.sha256.json").write_text("[1, 2")
    assert main(["generate", str(run), "--int8", "--prompt", "ROMEO"]) == 2
    assert "model_int8.sha256.json is damaged" in capsys.readouterr().err
    (run / "model_int8.sha256.json").unlink()  # as slmlab before the record wrote it: loaded as it is
    (run / "model_int8.pt").write_bytes(b"not a checkpoint")
    assert main(["generate", str(run), "--int8", "--prompt", "ROMEO"]) == 2
    assert "model_int8.pt is corrupt" in capsys.readouterr().err


def test_an_int8_model_of_older_weights_is_refused(text_corpus, make_config, capsys):
    """Quantised, then trained on: the int8 file would score and sample the weights of before."""
    cfg = make_config(text_corpus, train={"steps": 4, "checkpoint_every": 4})
    run = train(cfg, progress=False).run_dir
    assert main(["quantize", str(run), "--int8", "--batches", "1"]) == 0
    assert main(["eval", str(run), "--int8", "--batches", "1"]) == 0
    assert main(["train", "--resume", str(run), "--train.steps", "8", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--int8", "--batches", "1"]) == 2
    assert "model_int8.pt was made from other weights" in capsys.readouterr().err
    assert main(["quantize", str(run), "--int8", "--batches", "1"]) == 0
    assert main(["generate", str(run), "--int8", "--prompt", "ROMEO", "--max-new-tokens", "3"]) == 0


def test_quantize_times_generation_on_a_context_shorter_than_its_prompt(text_corpus, make_config, capsys):
    """Its timing prompt was the validation text's first 16 tokens: a model with a context of 8
    failed there ('the prompt has 16 tokens'), after scoring."""
    cfg = make_config(text_corpus, model={"block_size": 8}, data={"seq_len": 8}, train={"steps": 2, "checkpoint_every": 0})
    run = train(cfg, progress=False).run_dir
    assert main(["quantize", str(run), "--int8", "--batches", "1"]) == 0
    assert "| int8" in capsys.readouterr().out


ROOT = Path(__file__).parents[1]
RUN_CONFIGS = [p for p in sorted((ROOT / "configs").glob("*.toml")) if "variants" not in p.read_text()]


@pytest.mark.parametrize("path", [*RUN_CONFIGS, ROOT / "examples/plugins/gated_attention.toml"], ids=lambda p: p.stem)
def test_every_architecture_quantises_and_decodes_near_its_fp32_model(path):
    """The Self Area refines its one persona state, a 1-D vector, through nn.Linear layers:
    PyTorch's int8 kernel needs 2 dimensions, so `quantize --int8` of every SMT run ended in a
    RuntimeError traceback. Every built-in architecture (and the worked plugin) at tiny shapes:
    the int8 model's logits stay near the fp32 model's, and it decodes with its KV cache."""
    for cfg in models_to_check(path.stem, load_config(path)).values():
        torch.manual_seed(0)
        model = build_model(tiny_config(cfg)).eval()
        quantized = quantize_int8(model)
        assert any(isinstance(m, Int8Linear) for m in quantized.modules())
        tokens = torch.randint(0, 61, (2, 12))
        with torch.no_grad():
            exact, _ = model(tokens)
            approximate, _ = quantized(tokens)
            assert (approximate - exact).abs().max() < 0.05 * exact.abs().max() + 1e-3
            out = quantized.generate(tokens[:1, :4], 6, temperature=0.0)
        assert out.shape == (1, 10)
