"""A fifth idea is one file: an attention extension and its config section, registered with the
calls the built-in variants use, is validated, built into every layer, runs causally, trains, and
leaves the model unchanged when disabled. The test file itself plays the idea's file."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from slmlab.config import ConfigError, config_from_dict
from slmlab.registry import ATTENTION_EXTENSIONS, MODEL_SECTIONS, build_model, load_builtins, register_section
from slmlab.runs import RunDir, load_run
from slmlab.training import train


@dataclass
class ValueScaleConfig:
    enabled: bool = False
    init: float = 1.0


class ValueScale(nn.Module):
    """v_h <- a_h v_h with one learnable scalar a_h per head: (q, k, v (B, H, T, D), h, scale, state)
    -> (q, k, a ⊙ v, scale)."""

    def __init__(self, cfg):
        super().__init__()
        self.a = nn.Parameter(torch.full((cfg.n_head, 1, 1), cfg.vscale.init))

    def forward(self, q, k, v, h, scale, state):
        return q, k, v * self.a, scale


@pytest.fixture
def value_scale():
    load_builtins()
    ATTENTION_EXTENSIONS.register("vscale", lambda cfg, layer: ValueScale(cfg) if cfg.vscale.enabled else None)
    register_section("vscale", ValueScaleConfig, extends="attention")
    yield
    del ATTENTION_EXTENSIONS._entries["vscale"], MODEL_SECTIONS._entries["vscale"]  # leave the registries as found


SMALL = {"n_layer": 2, "n_head": 2, "d_model": 16, "block_size": 32, "vocab_size": 20}


def test_the_section_is_validated_like_a_built_in_one(value_scale):
    cfg = config_from_dict({"data": {"seq_len": 32}, "model": {**SMALL, "vscale": {"enabled": True, "init": 0.5}}})
    assert cfg.model.vscale.init == 0.5
    with pytest.raises(ConfigError, match="did you mean 'model.vscale.init'"):
        config_from_dict({"data": {"seq_len": 32}, "model": {**SMALL, "vscale": {"inti": 0.5}}})
    with pytest.raises(ConfigError, match="model.vscale.enabled"):
        config_from_dict({"data": {"seq_len": 32}, "model": {**SMALL, "vscale": {"enabled": "yes please"}}})


def test_the_extension_is_in_every_layer_and_causal(value_scale):
    model = build_model(
        config_from_dict({"data": {"seq_len": 32}, "model": {**SMALL, "vscale": {"enabled": True, "init": 0.5}}}).model
    ).eval()
    assert sum(isinstance(m, ValueScale) for m in model.modules()) == SMALL["n_layer"]
    x = torch.randint(0, 20, (1, 12))
    changed = x.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 20
    logits, _ = model(x)
    logits_changed, _ = model(changed)
    torch.testing.assert_close(logits[:, :8], logits_changed[:, :8])  # the future never reaches the past
    plain = build_model(config_from_dict({"data": {"seq_len": 32}, "model": SMALL}).model)
    assert not any(isinstance(m, ValueScale) for m in plain.modules())


def test_the_idea_trains_and_its_parameters_learn(value_scale, text_corpus, make_config):
    cfg = make_config(text_corpus, model={"vscale": {"enabled": True}}, train={"steps": 30, "eval_every": 30, "lr": 1e-2})
    result = train(cfg, progress=False)
    _, model, _ = load_run(result.run_dir)
    scales = [m.a for m in model.modules() if isinstance(m, ValueScale)]
    assert scales and any(not torch.allclose(a, torch.ones_like(a)) for a in scales)
    losses = [r["loss"] for r in RunDir(result.run_dir).read_metrics()]
    assert losses[-1] < losses[0]
