"""Long-context evaluation on a synthetic case with known answers, and through the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from slmlab.data.tokens import TokenSplit
from slmlab.evals.long_context import loss_by_context_length, loss_by_position
from tests.conftest import one_line_error

V = 10


class SeesAfter64(nn.Module):
    """Uniform over V before position 64; from there, logit 10 on the true next token (x + 1) % V."""

    class positions:
        max_positions = 128

    def forward(self, idx):
        logits = torch.zeros(*idx.shape, V)
        known = torch.nn.functional.one_hot((idx + 1) % V, V).float() * 10
        logits[:, 64:] = known[:, 64:]
        return logits, None


@pytest.fixture
def cyclic_split():
    return TokenSplit(np.arange(5000, dtype=np.uint16) % V, {"all": (0, 5000)})


def test_position_buckets_on_a_known_synthetic_case(cyclic_split):
    rows, change = loss_by_position(SeesAfter64(), cyclic_split, 128, 32, 4, 3, torch.device("cpu"))
    assert [(r["start"], r["end"]) for r in rows] == [(0, 31), (32, 63), (64, 95), (96, 127)]
    confident = math.log(1 + (V - 1) * math.exp(-10))
    expected = [math.log(V), math.log(V), confident, confident]
    assert [r["loss"] for r in rows] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert change["delta"] == pytest.approx(confident - math.log(V), rel=1e-5)  # every window alike: no spread
    assert change["low"] == pytest.approx(change["delta"]) and change["high"] == pytest.approx(change["delta"])


class Noisy(nn.Module):
    """Logits that differ from window to window (a function of the window's tokens): the bucket
    losses have a spread over the windows."""

    class positions:
        max_positions = 256

    def forward(self, idx):
        generator = torch.Generator().manual_seed(int(idx.sum()))
        return torch.randn(*idx.shape, V, generator=generator) * (1 + idx.float().unsqueeze(-1) / V), None


def test_every_long_context_loss_has_its_interval_over_the_windows(cyclic_split):
    """The bucket and context-length losses were printed bare: a bucket 0.01 lower read as the model
    using its context. Each now has the 95% CI of its mean over the windows (naive reference:
    per-window means, scipy's t), and the buckets the last-minus-first change paired by window."""
    from scipy import stats

    from slmlab.evals.long_context import token_losses

    split = TokenSplit(np.random.default_rng(0).integers(0, V, 5000).astype(np.uint16), {"all": (0, 5000)})
    model, cpu = Noisy(), torch.device("cpu")
    rows, change = loss_by_position(model, split, 64, 16, 4, 3, cpu)
    losses = token_losses(model, split, 64, 4, 3, cpu).double().numpy()

    def interval(values):
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
        return values.mean() - half, values.mean() + half

    for row, start in zip(rows, range(0, 64, 16)):
        per_window = losses[:, start : start + 16].mean(1)
        assert (row["low"], row["high"]) == pytest.approx(interval(per_window)) and row["low"] < row["loss"] < row["high"]
    d = losses[:, 48:].mean(1) - losses[:, :16].mean(1)
    assert (change["delta"], change["low"], change["high"]) == pytest.approx((d.mean(), *interval(d)))
    [row] = loss_by_context_length(model, split, [64], 4, 3, cpu)
    assert (row["low"], row["high"]) == pytest.approx(interval(losses.mean(1)))


def test_context_lengths_beyond_learned_positions_are_reported_not_evaluated(cyclic_split):
    rows = loss_by_context_length(SeesAfter64(), cyclic_split, [64, 128, 256], 4, 2, torch.device("cpu"))
    assert rows[0]["loss"] == pytest.approx(math.log(V)) and rows[1]["loss"] < math.log(V)
    assert rows[2]["loss"] is None and "beyond the 128 learned positions" in rows[2]["note"]


def test_a_validation_split_shorter_than_the_evaluation_length_names_that_length():
    from slmlab.data.corpora import CorpusError

    short = TokenSplit(np.arange(100, dtype=np.uint16) % V, {"all": (0, 100)})
    with pytest.raises(CorpusError, match=r"fewer than the evaluation context length \+ 1 = 129"):
        loss_by_position(SeesAfter64(), short, 128, 32, 4, 3, torch.device("cpu"))


def test_eval_by_position_and_context_lengths_through_the_cli(text_corpus, make_config, capsys):
    from slmlab.cli import main
    from slmlab.runs.run_dir import RunDir
    from slmlab.training import train

    cfg = make_config(text_corpus, model={"pos": "rope", "attention": "block_local", "local_block": 8})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg).path
    assert main(["eval", str(run), "--by-position", "--bucket", "8", "--batches", "2"]) == 0
    report = json.loads((run / "eval_by_position.json").read_text())
    assert len(report["buckets"]) == 4 and (run / "eval_by_position.png").is_file()
    assert set(report["last_minus_first"]) == {"delta", "low", "high"}
    assert "last bucket minus first, paired by window: " in capsys.readouterr().out
    assert main(["eval", str(run), "--context-lengths", "16,32,64", "--batches", "2", "--rope-scale", "2"]) == 0
    lengths = json.loads((run / "eval_context_lengths_rope2.json").read_text())["lengths"]
    assert [r["context_length"] for r in lengths] == [16, 32, 64] and all(r["loss"] > 0 for r in lengths)
    printed = capsys.readouterr().out
    assert "context length" in printed and "Δ loss vs rope_scale 1 (as trained), paired by window" in printed
    # the scale asked for against the one trained with, on the same windows: each length's change paired by window
    assert main(["eval", str(run), "--context-lengths", "16,32,64", "--batches", "2"]) == 0
    trained = json.loads((run / "eval_context_lengths.json").read_text())["lengths"]
    for scaled, plain in zip(lengths, trained):
        assert scaled["trained_loss"] == pytest.approx(plain["loss"]) and "vs_trained" not in plain
        change = scaled["vs_trained"]
        assert (
            change["delta"] == pytest.approx(scaled["loss"] - plain["loss"]) and change["low"] < change["delta"] < change["high"]
        )
    assert main(["eval", str(run), "--by-position", "--bucket", "8", "--batches", "2", "--rope-scale", "2"]) == 0
    scaled_buckets = json.loads((run / "eval_by_position_rope2.json").read_text())["buckets"]
    for bucket, plain in zip(scaled_buckets, report["buckets"]):  # each bucket against the unscaled model's, paired by window
        assert bucket["trained_loss"] == pytest.approx(plain["loss"])
        assert bucket["vs_trained"]["delta"] == pytest.approx(bucket["loss"] - plain["loss"])
    assert "Δ loss vs rope_scale 1 (as trained), paired by window" in capsys.readouterr().out
    # a length past the 32 positions the run trained at says so (both models: RoPE holds no position table)
    assert (
        [r.get("note") for r in trained] == [None, None, "past the 32 positions trained at"] == [r.get("note") for r in lengths]
    )
    # one bucket as wide as the window: no first and last to compare (they read +0.0000 [+0.0000, +0.0000])
    assert main(["eval", str(run), "--by-position", "--bucket", "32", "--batches", "2"]) == 0
    assert json.loads((run / "eval_by_position.json").read_text())["last_minus_first"] is None
    out = capsys.readouterr().out
    assert "one bucket of 32 positions covers the 32-token window: give --bucket below 32" in out and "minus first" not in out


def test_prompt_suite_report_is_reproducible(text_corpus, make_config, tmp_path, capsys):
    from slmlab.cli import main
    from slmlab.config import ConfigError
    from slmlab.evals.prompts import DEFAULT_SUITE, load_suite
    from slmlab.runs.run_dir import RunDir
    from slmlab.training import train

    assert len(load_suite(DEFAULT_SUITE)) >= 8
    cfg = make_config(text_corpus, data={"tokenizer": "byte"}, model={"block_size": 256})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg).path
    suite = tmp_path / "suite.jsonl"
    suite.write_text(
        '{"id": "a", "prompt": "ROMEO:", "max_tokens": 20, "temperature": 0.9, "seed": 4}\n'
        '{"id": "b", "prompt": "To be", "max_tokens": 10, "temperature": 0.0}\n'
    )
    assert main(["prompts", str(run), "--suite", str(suite)]) == 0
    first = (run / "prompts_suite.md").read_text()
    assert "## a" in first and "## b" in first and "ROMEO:" in first
    assert main(["prompts", str(run), "--suite", str(suite)]) == 0
    assert (run / "prompts_suite.md").read_text() == first
    assert main(["prompts", str(run)]) == 0  # the bundled suite, through the byte tokenizer
    assert "governor-hunting" in (run / "prompts_control_systems.md").read_text()
    suite.write_text('{"id": "a", "prompt": "x", "max_tokns": 5}\n')
    with pytest.raises(ConfigError, match="unknown config key 'prompt\\[0\\].max_tokns'"):
        load_suite(suite)


def test_rope_scale_on_a_model_without_rope_is_refused(text_corpus, make_config, capsys):
    """--rope-scale on learned positions scored the unscaled model under the scaled label."""
    from slmlab.cli import main
    from slmlab.runs.run_dir import RunDir
    from slmlab.training import train

    cfg = make_config(text_corpus, train={"steps": 2, "checkpoint_every": 0})
    train(cfg, progress=False)
    capsys.readouterr()
    assert main(["eval", str(RunDir.for_config(cfg).path), "--batches", "1", "--rope-scale", "2"]) == 2
    err = capsys.readouterr().err
    assert "--rope-scale 2 would change nothing" in err and "model.pos = 'learned'" in err and "drop --rope-scale" in err


def test_the_rope_scale_a_run_trained_with_is_refused(text_corpus, make_config, capsys):
    """--rope-scale at the run's own scale scored the model twice and paired it with itself
    (every change +0.0000 [+0.0000, +0.0000]), and wrote a second file of the same figures."""
    from slmlab.cli import main
    from slmlab.runs.run_dir import RunDir
    from slmlab.training import train

    cfg = make_config(text_corpus, model={"pos": "rope", "rope_scale": 2.0}, train={"steps": 2, "checkpoint_every": 0})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg).path
    capsys.readouterr()
    assert main(["eval", str(run), "--context-lengths", "16,32", "--batches", "1", "--rope-scale", "2"]) == 2
    one_line_error(capsys, "--rope-scale 2 is the rope_scale " + str(run) + " trained with")
    assert not list(run.glob("eval_*"))
    assert main(["eval", str(run), "--context-lengths", "16,32", "--batches", "1", "--rope-scale", "1"]) == 0


def test_a_rope_scale_override_is_weighed_alone_not_with_the_runs_recorded_settings(text_corpus, make_config):
    """A run's recorded config loads as it was trained, even with settings a check refuses in a
    config a user writes (a run trained before that check: SMAT's s_dim with SMAT off, a
    local_block with full attention). --rope-scale on it was refused for such a recorded
    setting, which the user cannot remove."""
    import json

    from slmlab.runs.run_dir import RunDir, load_run
    from slmlab.training import train

    cfg = make_config(text_corpus, model={"pos": "rope"}, train={"steps": 2, "checkpoint_every": 0})
    train(cfg, progress=False)
    path = RunDir.for_config(cfg).path
    recorded = json.loads((path / "config.json").read_text())
    recorded["model"].update(smat={**recorded["model"].get("smat", {}), "s_dim": 8}, local_block=16)
    (path / "config.json").write_text(json.dumps(recorded))
    # ... as trained: its weights record the config they were trained under
    from safetensors.torch import load_file

    from slmlab.runs.checkpoints import save_weights

    summary = json.loads((path / "summary.json").read_text())
    summary["final_sha256"] = save_weights(
        load_file(path / "final.safetensors"), path / "final.safetensors", {"config": json.dumps(recorded)}
    )
    (path / "summary.json").write_text(json.dumps(summary))
    scaled, _, _ = load_run(path, model_overrides={"rope_scale": 2.0})
    assert scaled.model.rope_scale == 2.0 and scaled.model.smat.s_dim == 8 and scaled.model.local_block == 16
