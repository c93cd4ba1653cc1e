"""The modern baseline's options each change what they claim: SwiGLU (shape, parameters, the
formula), no biases, the warmup-stable-decay schedule, Muon on the hidden matrices with AdamW for
the rest (training lowers the loss; resume is bit-exact); and the preset passes `slmlab check`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from slmlab.config import ConfigError, ModelConfig, TrainConfig, load_config
from slmlab.model import build_model
from slmlab.model.layers import MLP, SwiGLU
from slmlab.runs.run_dir import RunDir
from slmlab.training import Trainer, train
from slmlab.training.optim import Optimizers, build_optimizer, lr_at, muon_matrices
from tests.conftest import kill_after_step

ROOT = Path(__file__).parents[1]
SMALL = {"n_layer": 2, "n_head": 2, "d_model": 48, "d_ff": 192, "block_size": 32, "vocab_size": 40}


def test_swiglu_keeps_the_parameters_and_computes_its_formula():
    gelu = build_model(ModelConfig(**SMALL, bias=False))
    swiglu = build_model(ModelConfig(**SMALL, bias=False, mlp="swiglu"))
    assert isinstance(swiglu.blocks[0].mlp, SwiGLU) and isinstance(gelu.blocks[0].mlp, MLP)
    assert swiglu.blocks[0].mlp.gate.weight.shape == (128, 48)  # 2/3 of d_ff = 192
    assert sum(p.numel() for p in swiglu.parameters()) == sum(p.numel() for p in gelu.parameters())
    mlp, x = swiglu.blocks[0].mlp, torch.randn(2, 5, 48)
    expected = (F.silu(x @ mlp.gate.weight.T) * (x @ mlp.up.weight.T)) @ mlp.down.weight.T
    torch.testing.assert_close(mlp(x), expected)


def test_no_bias_means_no_bias_anywhere():
    model = build_model(ModelConfig(**SMALL, bias=False, mlp="swiglu", norm="rmsnorm", pos="rope"))
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]
    assert [n for n, _ in build_model(ModelConfig(**SMALL)).named_parameters() if n.endswith("bias")]


def test_warmup_stable_decay_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == lr_at(50, cfg) == lr_at(80, cfg) == 1.0  # stable until the last 20 steps
    assert lr_at(90, cfg) == pytest.approx(0.55) and lr_at(100, cfg) == pytest.approx(0.1)
    cosine = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(50, cosine) < 1.0  # the default still decays throughout


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = build_model(ModelConfig(**SMALL, bias=False, mlp="swiglu", norm="rmsnorm", tie_embeddings=False))
    optimizer = build_optimizer(model, TrainConfig(optimizer="muon"), torch.device("cpu"))
    assert isinstance(optimizer, Optimizers)
    adamw, muon = optimizer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    to_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    to_adamw = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert not to_muon & to_adamw and to_muon | to_adamw == set(names.values())
    assert all(".attn." in n or ".mlp." in n for n in to_muon)
    assert {"wte.weight", "head.weight"} <= to_adamw and all(model.get_parameter(n).dim() == 2 for n in to_muon)
    assert len(muon_matrices(model)) == len(to_muon)


def test_muon_trains_and_resumes_bit_exact(text_corpus, make_config):
    settings = {"optimizer": "muon", "schedule": "wsd", "steps": 30, "checkpoint_every": 15, "eval_every": 15, "lr": 3e-3}
    straight = make_config(text_corpus, model={"mlp": "swiglu", "bias": False, "norm": "rmsnorm"}, train=settings)
    straight.name = "straight"
    train(straight, progress=False)
    losses = [r["loss"] for r in RunDir.for_config(straight).read_metrics()]
    assert losses[-1] < losses[0] - 0.5

    halves = make_config(text_corpus, model={"mlp": "swiglu", "bias": False, "norm": "rmsnorm"}, train=settings)
    halves.name = "halves"
    kill_after_step(Trainer(halves, progress=False), 15)  # the process dies after the step-15 checkpoint
    train(halves, resume=True, progress=False)
    a, b = (load_file(RunDir.for_config(c).final_weights) for c in (straight, halves))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_settings_that_would_be_ignored_are_refused():
    with pytest.raises(ConfigError, match="model.mlp = 'swiglu' has no effect under model.arch = 'tape'"):
        load_config(ROOT / "configs" / "tape_small.toml", {"model.mlp": "swiglu"})
    with pytest.raises(ConfigError, match="model.mlp = 'swiglo' is not one of gelu, swiglu"):
        load_config(ROOT / "configs" / "quickstart.toml", {"model.mlp": "swiglo"})
