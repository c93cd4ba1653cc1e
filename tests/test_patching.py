"""Activation patching (analysis/patching.py): each score equals a naive reference that patches one
activation of a one-row forward pass at a time, the scores obey what causality and the residual
stream imply, and `slmlab viz patch` writes its files and refuses what it cannot compare."""

from __future__ import annotations

import pytest
import torch

from slmlab.analysis.patching import POSITION_POINTS, activation_patching, last_token_metric
from slmlab.cli import main
from slmlab.config import ConfigError
from slmlab.model import build_model
from slmlab.model.activations import run_with_cache
from slmlab.training import train
from tests.test_viz import MODELS

KINDS = ["decoder", "smat", "block_local_rope", "smt"]
CHANGED = 6  # the one position where the two prompts differ


def _prompts(T: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    clean = torch.randint(0, 40, (1, T))
    corrupt = clean.clone()
    corrupt[0, CHANGED] = (clean[0, CHANGED] + 7) % 40
    return clean, corrupt


def _model(kind: str):
    torch.manual_seed(0)
    return build_model(MODELS[kind]).eval()


def _naive_score(model, clean, corrupt, metric, name: str, index: tuple) -> float:
    """One-row forward of the corrupted prompt with `name`'s output at `index` (a position of a
    (B, T, d) activation, or a head of a (B, H, T, D) one) taken from the clean run."""
    clean_logits, cache = run_with_cache(model, clean, names=[name])
    m_clean, m_corrupt = float(metric(clean_logits)), float(metric(model(corrupt)[0]))

    def hook(module, args, out):
        out = out.clone()
        out[(slice(None), *index)] = cache[name][(slice(None), *index)]
        return out

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        m = float(metric(model(corrupt)[0]))
    finally:
        handle.remove()
    return (m - m_corrupt) / (m_clean - m_corrupt)


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_every_score_is_the_one_row_patch_of_that_activation(kind):
    model = _model(kind)
    clean, corrupt = _prompts()
    metric = last_token_metric(answer=3)
    result = activation_patching(model, clean, corrupt, metric)
    L, T = len(model.blocks), clean.shape[1]
    for point in POSITION_POINTS:
        assert result.by_position[point].shape == (L, T)
        for layer in range(L):
            for t in (0, CHANGED, CHANGED + 2, T - 1):
                expected = _naive_score(model, clean, corrupt, metric, f"blocks.{layer}.{point}", (t,))
                assert result.by_position[point][layer, t].item() == pytest.approx(expected, abs=1e-4)
    assert result.by_head.shape == (L, 2)
    for layer in range(L):
        for head in range(2):
            expected = _naive_score(model, clean, corrupt, metric, f"blocks.{layer}.attn.hook_z", (head,))
            assert result.by_head[layer, head].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_scores_obey_causality_and_the_residual_stream(kind):
    """Before the changed position both runs are the same (causal attention): no patch there does
    anything. Patching the stream entering block 0 at the changed position gives the clean input
    back whole (score 1). The last block's MLP output reaches the last position's logits only at
    that position, where the patched prediction is head(norm_f(x_L - mlp + mlp_clean))."""
    model = _model(kind)
    clean, corrupt = _prompts()
    answer, wrong = 3, 5
    metric = last_token_metric(answer, wrong)
    result = activation_patching(model, clean, corrupt, metric)
    for point in POSITION_POINTS:
        assert result.by_position[point][:, :CHANGED].abs().max() < 1e-4
    resid_0 = result.by_position["hook_resid_pre"][0]
    assert resid_0[CHANGED].item() == pytest.approx(1.0, abs=1e-4)
    assert resid_0[torch.arange(len(resid_0)) != CHANGED].abs().max() < 1e-4
    last = len(model.blocks) - 1
    mlp = result.by_position["hook_mlp_out"][last]
    assert mlp[:-1].abs().max() < 1e-4
    names = [f"blocks.{last}.hook_mlp_out"]
    clean_logits, clean_cache = run_with_cache(model, clean, names=names)
    corrupt_logits, corrupt_cache = run_with_cache(model, corrupt, names=names)
    final = {}
    handle = model.norm_f.register_forward_pre_hook(lambda module, args: final.__setitem__("x", args[0]))
    model(corrupt)
    handle.remove()
    x = final["x"][:, -1] - corrupt_cache[names[0]][:, -1] + clean_cache[names[0]][:, -1]
    logits = model.head(model.norm_f(x))
    m, m_clean, m_corrupt = (
        float(logits[0, answer] - logits[0, wrong]),
        float(metric(clean_logits)),
        float(metric(corrupt_logits)),
    )
    assert mlp[-1].item() == pytest.approx((m - m_corrupt) / (m_clean - m_corrupt), abs=1e-4)


def test_a_long_prompt_is_patched_over_several_passes_with_the_same_scores(monkeypatch, caplog):
    """... and says how far it has come (minutes at T = 512 on a CPU, in silence before)."""
    from slmlab import phase_progress
    from slmlab.analysis import patching

    model = _model("smat")
    clean, corrupt = _prompts()
    metric = last_token_metric(answer=3)
    whole = activation_patching(model, clean, corrupt, metric)
    monkeypatch.setattr(patching, "ROW_TOKENS", 5 * clean.shape[1])  # 5 rows a pass: 12 positions in 3
    monkeypatch.setattr(phase_progress, "PHASE_HEARTBEAT", 0.0)
    caplog.set_level("INFO", logger="slmlab")
    split = activation_patching(model, clean, corrupt, metric)
    layers, heads = whole.by_head.shape
    total = layers * (len(POSITION_POINTS) * clean.shape[1] + heads)
    assert caplog.records[-1].getMessage().startswith(f"activation patching: {total}/{total} patches (100%)")
    for point in POSITION_POINTS:
        torch.testing.assert_close(split.by_position[point], whole.by_position[point], rtol=0, atol=1e-5)
    torch.testing.assert_close(split.by_head, whole.by_head, rtol=0, atol=1e-5)


def test_patching_refuses_what_it_cannot_compare():
    model = _model("decoder")
    clean, corrupt = _prompts()
    metric = last_token_metric(answer=3)
    with pytest.raises(ConfigError, match="same number of tokens"):
        activation_patching(model, clean, corrupt[:, :-1], metric)
    with pytest.raises(ConfigError, match="no difference for a patch to restore"):
        activation_patching(model, clean, clean, metric)
    with pytest.raises(ConfigError, match="model.arch = 'tape' has none"):
        activation_patching(_model("tape"), clean, corrupt, metric)


def test_viz_patch_writes_the_heatmaps_and_tables(text_corpus, make_config, capsys):
    run = train(make_config(text_corpus, train={"steps": 3, "checkpoint_every": 0}), progress=False).run_dir
    capsys.readouterr()
    assert main(["viz", "patch", str(run), "--clean", "ROMEO: But", "--corrupt", "JULIET: Bu"]) == 0
    text = capsys.readouterr().out
    assert "Metric at the last position: log p(" in text and "## MLP output (hook_mlp_out)" in text
    assert "| block 1 " in text and "0: J/R" in text and "head 1" in text
    assert (run / "viz" / "patch.png").stat().st_size > 1000 and "hook_resid_pre" in (run / "viz" / "patch.md").read_text()
    assert (
        main(["viz", "patch", str(run), "--clean", "ROMEO: But", "--corrupt", "JULIET: B", "--answer", "t", "--wrong", "s"]) == 2
    )
    assert "the clean prompt is 10 tokens and the corrupted one 9" in capsys.readouterr().err
    assert main(["viz", "patch", str(run), "--clean", "ROMEO: But", "--corrupt", "JULIET: Bu", "--answer", "to"]) == 2
    assert "--answer 'to' is 2 tokens for this tokenizer: give one token" in capsys.readouterr().err
    assert (
        main(["viz", "patch", str(run), "--clean", "ROMEO: But", "--corrupt", "JULIET: Bu", "--answer", "t", "--wrong", "s"]) == 0
    )
    assert "logit('t') - logit('s')" in capsys.readouterr().out
