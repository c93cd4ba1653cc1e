"""Attention visualisation: the maps rebuilt on demand are the attention each model applied
(P v equals the pattern's output) for the backbone, SMAT, block-local, SMT and Tape; files and the
bertviz export for a tiny run."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from slmlab.cli import main
from slmlab.config import ConfigError, ModelConfig
from slmlab.model import build_model
from slmlab.model.attention_maps import capture_attention
from slmlab.training import train
from slmlab.variants.self_area import SelfAreaConfig
from slmlab.variants.smat import SmatConfig
from slmlab.variants.tape import TapeConfig

BASE = ModelConfig(vocab_size=40, n_layer=2, n_head=2, d_model=32, block_size=64, local_block=8)
MODELS = {
    "decoder": BASE,
    "smat": dataclasses.replace(BASE, smat=SmatConfig(use_S=True, use_G=True, s_dim=8)),
    "block_local_rope": dataclasses.replace(BASE, attention="block_local", pos="rope"),
    "smt": dataclasses.replace(BASE, self_area=SelfAreaConfig(enabled=True, self_dim=8)),
    "tape": dataclasses.replace(
        BASE,
        arch="tape",
        pos="sinusoidal",
        head="student_t",
        tape=TapeConfig(n_critics=1, coda_layers=1, critic_layers=1, rnn_dim=8),
    ),
}


@pytest.mark.parametrize("kind", MODELS)
def test_captured_maps_are_the_attention_the_model_applied(kind):
    torch.manual_seed(0)
    model = build_model(MODELS[kind]).eval()
    idx = torch.randint(0, 40, (1, 21))
    maps, logits = capture_attention(model, idx)
    assert torch.equal(logits, model(idx)[0])  # the captured forward is the model's own
    assert len(maps) == sum(1 for m in model.modules() if type(m).__name__ == "CausalSelfAttention")
    for amap in maps:
        torch.testing.assert_close(amap.probs.sum(-1), torch.ones(amap.probs.shape[:2]))
        assert (amap.probs.triu(diagonal=1) == 0).all()  # causal
        width = amap.output.shape[-1]
        torch.testing.assert_close(amap.probs @ amap.values[..., :width], amap.output, rtol=1e-4, atol=1e-5)
    if kind == "block_local_rope":  # query 20 (block 2) sees keys 8..20 only
        assert (maps[0].probs[:, 20, :8] == 0).all() and (maps[0].probs[:, 20, 8:21] > 0).all()


def test_viz_attention_writes_heatmaps_text_and_bertviz(text_corpus, make_config, capsys):
    run = train(make_config(text_corpus, train={"steps": 3, "checkpoint_every": 0}), progress=False).run_dir
    assert main(["viz", "attention", str(run), "--prompt", "ROMEO: But soft", "--export", "bertviz"]) == 0
    viz = run / "viz"
    heatmaps = sorted(viz.glob("attention_0*.png"))
    assert len(heatmaps) == 2 and (viz / "attention_text.png").stat().st_size > 1000
    data = torch.load(viz / "attention_bertviz.pt", weights_only=True)
    assert len(data["attention"]) == 2 and data["attention"][0].shape == (1, 2, 15, 15)
    assert "".join(data["tokens"]) == "ROMEO: But soft"
    assert main(["viz", "attention", str(run), "--prompt", "o" * 65]) == 2
    assert "the model's context is 64" in capsys.readouterr().err


def test_frames_during_training_and_the_animation(micro_toml, tmp_path, capsys):
    assert main(["train", str(micro_toml), "--name", "tiny", "--train.steps", "6", "--viz-every", "2", "--no-progress"]) == 0
    frames = sorted((tmp_path / "runs" / "tiny" / "viz" / "frames").glob("frame_*.png"))
    assert [f.name for f in frames] == ["frame_000002.png", "frame_000004.png", "frame_000006.png"]
    assert main(["viz", "animate", str(tmp_path / "runs" / "tiny")]) == 0
    from PIL import Image

    gif = Image.open(tmp_path / "runs" / "tiny" / "viz" / "training.gif")
    assert gif.n_frames == 3
    assert main(["viz", "animate", str(tmp_path / "runs")]) == 2  # not a run: it said "no frames in runs/viz/frames"
    assert "runs is not a run directory (no config.json); it holds runs" in capsys.readouterr().err
    kept = {frame: frame.read_bytes() for frame in frames}
    shutil.rmtree(frames[0].parent)
    assert main(["viz", "animate", str(tmp_path / "runs" / "tiny")]) == 2
    assert "no frames in" in capsys.readouterr().err
    frames[0].parent.mkdir()
    for frame, data in kept.items():
        frame.write_bytes(data)
    for damage in (frames[1].read_bytes()[:100], b""):  # cut short, emptied: Pillow's SyntaxError was a traceback
        frames[1].write_bytes(damage)
        assert main(["viz", "animate", str(tmp_path / "runs" / "tiny")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"slmlab: error: viz frame {frames[1]} is damaged (") and "\n" not in err, err


def test_frames_can_be_asked_for_on_resume_and_do_not_change_the_training(text_corpus, make_config, capsys):
    """--viz-every watches a run: a resume may add it (before: ignored in silence), and the run
    ends with the weights of one trained straight through without frames."""
    from safetensors.torch import load_file

    from slmlab.runs.run_dir import RunDir
    from slmlab.training import Trainer
    from tests.conftest import kill_after_step

    settings = {"model": {"dropout": 0.1}, "train": {"steps": 20, "checkpoint_every": 10}}
    straight = dataclasses.replace(make_config(text_corpus, **settings), name="straight")
    train(straight, progress=False)
    watched = dataclasses.replace(make_config(text_corpus, **settings), name="watched")
    kill_after_step(Trainer(watched, progress=False), 10)
    run = RunDir.for_config(watched).path
    assert main(["train", "--resume", str(run), "--viz-every", "5", "--no-progress"]) == 0
    assert [f.name for f in sorted((run / "viz" / "frames").glob("*.png"))] == ["frame_000015.png", "frame_000020.png"]
    a, b = load_file(RunDir.for_config(straight).final_weights), load_file(RunDir.for_config(watched).final_weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["decoder", "smat", "block_local_rope", "smt"])
def test_the_logit_lens_at_layer_l_is_the_model_cut_after_l_blocks(kind):
    """Naive reference: a copy of the model keeping only its first l blocks predicts
    head(norm_f(x_l)) as its logits; the lens's last stage is the whole model's prediction."""
    import copy

    from slmlab.analysis.lens import logit_lens

    torch.manual_seed(0)
    model = build_model(MODELS[kind]).eval()
    idx = torch.randint(0, 40, (2, 21))
    lens = logit_lens(model, idx)
    assert lens.shape == (3, 2, 21, 40)
    for layer in range(3):
        cut = copy.deepcopy(model)
        cut.blocks = cut.blocks[:layer]
        with torch.no_grad():
            torch.testing.assert_close(lens[layer], cut(idx)[0].log_softmax(-1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(lens[0], lens[2])


def test_viz_lens_writes_the_heatmap_and_table_and_refuses_what_it_cannot_read(text_corpus, make_config, capsys):
    from slmlab.analysis.lens import logit_lens

    run = train(make_config(text_corpus, train={"steps": 3, "checkpoint_every": 0}), progress=False).run_dir
    capsys.readouterr()
    assert main(["viz", "lens", str(run), "--prompt", "ROMEO: But"]) == 0
    table = capsys.readouterr().out
    assert "| embeddings " in table and "| after block 1 " in table and "R → O" in table
    assert (run / "viz" / "lens.png").stat().st_size > 1000 and "after block 0" in (run / "viz" / "lens.md").read_text()
    assert main(["viz", "lens", str(run), "--prompt", "R"]) == 2
    assert "fewer than 2 tokens" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="model.arch = 'tape' has none"):
        logit_lens(build_model(MODELS["tape"]).eval(), torch.zeros(1, 4, dtype=torch.long))


ALIBI = '''
import torch
import torch.nn.functional as F
from torch import nn

from slmlab.model.attention import KVCache
from slmlab.registry import ATTENTION_PATTERNS


class Alibi(nn.Module):
    """Causal attention with ALiBi's bias -m_h (i - j), m_h = 2^(-8 h / H), h = 1..H."""

    def __init__(self, cfg, layer):
        super().__init__()
        self.register_buffer("slopes", 2.0 ** (-8.0 * torch.arange(1, cfg.n_head + 1) / cfg.n_head), persistent=False)

    def make_cache(self, max_len):
        return KVCache(max_len)

    def visible(self, Tq, Tk, q_start, device):
        q_pos = torch.arange(q_start, q_start + Tq, device=device)[:, None]
        return torch.arange(q_start + Tq - Tk, q_start + Tq, device=device) <= q_pos

    def bias(self, Tq, Tk, q_start, device, dtype):
        distance = torch.arange(q_start, q_start + Tq, device=device)[:, None] - torch.arange(q_start + Tq - Tk, q_start + Tq, device=device)
        bias = -distance.to(dtype) * self.slopes.to(dtype)[:, None, None]  # (H, Tq, Tk)
        return bias.masked_fill(distance < 0, float("-inf"))

    def forward(self, q, k, v, scale, q_start):
        mask = self.bias(q.shape[2], k.shape[2], q_start, q.device, q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
{scores}

ATTENTION_PATTERNS.register("{name}", Alibi)
'''
SCORES = """
    def scores(self, q, k, scale, q_start):
        return (q @ k.transpose(-1, -2)) * scale + self.bias(q.shape[2], k.shape[2], q_start, q.device, q.dtype)
"""


def test_a_pattern_with_a_score_bias_draws_its_own_maps_or_is_refused(tmp_path):
    """A plugin pattern that adds a bias to the logits (ALiBi) had maps drawn without it, in
    silence: the maps are the pattern's own `scores` where it has them, else refused in one line."""
    from slmlab.plugins import activate

    idx = torch.randint(0, 40, (1, 21))
    for name, scores in (("alibi_scored", SCORES), ("alibi_unscored", "")):
        path = tmp_path / f"{name}.py"
        path.write_text(ALIBI.format(name=name, scores=scores))
        activate([str(path)])
        model = build_model(dataclasses.replace(BASE, attention=name, n_head=4)).eval()
        if not scores:
            with pytest.raises(
                ConfigError, match=r"blocks.0.attn: the attention pattern Alibi applies more than .* give it a method scores"
            ):
                capture_attention(model, idx)
            continue
        maps, _ = capture_attention(model, idx)
        for amap in maps:
            assert (amap.probs.triu(diagonal=1) == 0).all()
            torch.testing.assert_close(amap.probs @ amap.values, amap.output, rtol=1e-4, atol=1e-5)


def test_token_labels_show_every_character():
    """A space token was a blank table cell and axis label, a control byte printed as nothing (a
    byte tokenizer's \\r could break a Markdown table's line)."""
    from slmlab.training.frames import token_labels

    class Pieces:
        def decode(self, ids):
            return ["\n", " the", "\t", "\x00", "", "\x7f", "\r", "a|b"][ids[0]]

    assert token_labels(Pieces(), list(range(8))) == ["⏎", "␣the", "␉", "␀", "·", "␡", "␍", "a|b"]
