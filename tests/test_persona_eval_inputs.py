"""persona-eval on inputs that do not fit the run: a persona text too short for one window of
its context, prompts longer than half of it."""

from __future__ import annotations

import torch

from slmlab.cli import main
from slmlab.config import ModelConfig
from slmlab.data.tokenizers import ByteTokenizer
from slmlab.model import build_model
from slmlab.persona.evaluate import INSTRUCTIONS, continuations


def test_a_persona_text_too_short_for_a_window_is_left_out_not_an_error_naming_settings_it_refuses(
    tmp_path, micro_toml, text_corpus, caplog, capsys
):
    """A persona text whose held-out part is shorter than one window of the run's data.seq_len ended
    the whole report in "raise data.val_fraction or lower data.seq_len", settings persona-eval
    refuses; its perplexity is now left out ('–') with a warning, and the adherence is measured."""
    assert main(["train", str(micro_toml), "--name", "r", "--no-progress"]) == 0
    capsys.readouterr()
    (tmp_path / "short.txt").write_text("ROMEO: the night is short. " * 3)  # its tail: fewer than 33 characters
    caplog.set_level("WARNING")
    argv = ["persona-eval", str(tmp_path / "runs" / "r"), "--persona-data", str(tmp_path / "short.txt")]
    assert main([*argv, "--other-data", str(text_corpus), "--openings", "2", "--max-new-tokens", "4"]) == 0
    assert "persona-text ppl and bpb not measured ('–' in the table): its held-out part is" in caplog.text
    assert "fewer than one window of the run's data.seq_len + 1 = 33; give more text" in caplog.text
    row = capsys.readouterr().out.splitlines()[-1].split("|")
    assert row[5].strip() == row[6].strip() == "–" and float(row[7]) > 0  # persona ppl and bpb out, other text in


def test_a_prompt_cut_to_half_the_context_is_said(caplog):
    """persona-eval keeps a prompt's last block_size // 2 tokens, and cut the start of its
    instructions ("Ignore your usual voice. ...") in silence on a model of a short context."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=1, n_head=2, d_model=16, block_size=32, vocab_size=256)).eval()
    caplog.set_level("WARNING")
    prompts = ["The", "It was", *INSTRUCTIONS[:2]]  # two of 3 and 6 bytes, two of 58 and 80
    assert len(continuations(model, ByteTokenizer(), prompts, 4, 0, torch.device("cpu"))) == 4
    assert "2 prompts of 4 cut to their last 16 tokens, half the model's 32-token context" in caplog.text
    caplog.clear()
    continuations(model, ByteTokenizer(), prompts[:2], 4, 0, torch.device("cpu"))
    assert "cut to their last" not in caplog.text
