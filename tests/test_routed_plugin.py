"""A plugin whose forward reads values, as token routing does (a top-k mixture of experts picks
each token's experts with `nonzero`), cannot run on the meta device where slmlab counts FLOPs and
memory: `slmlab info`, the report card and a sweep's train-FLOPs column ended in a traceback
(after every run of the sweep had trained). Such a model is now built on the CPU and counted
running, and the counts hold against independent references."""

from __future__ import annotations

import pytest
import torch

from slmlab.config import ModelConfig, load_config
from slmlab.experiments.budget import flops_per_token
from slmlab.model import build_model
from slmlab.model.accounting import countable_model, measured_flops_per_token, traced_activation_bytes
from tests.test_memory import kept_for_backward
from tests.test_plugins import active_plugin, plugin_toml, slmlab

EXPERTS, TOP_K, WIDTH = 4, 2, 24  # each token runs TOP_K experts of WIDTH hidden units

ROUTED = f'''
import torch
import torch.nn.functional as F
from torch import nn
from slmlab.registry import MLPS


class RoutedMLP(nn.Module):
    """Top-{TOP_K} of {EXPERTS} GELU experts of width {WIDTH} per token, weighted by the softmax of
    the router's top logits; each expert runs only its own tokens (found with nonzero)."""

    def __init__(self, cfg):
        super().__init__()
        self.router = nn.Linear(cfg.d_model, {EXPERTS}, bias=False)
        self.w1 = nn.Parameter(torch.randn({EXPERTS}, cfg.d_model, {WIDTH}) * 0.02)
        self.w2 = nn.Parameter(torch.randn({EXPERTS}, {WIDTH}, cfg.d_model) * 0.02)

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        top, chosen = self.router(flat).topk({TOP_K}, dim=-1)
        weights = top.softmax(-1)
        out = torch.zeros_like(flat)
        for e in range({EXPERTS}):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            out = out.index_add(0, rows, (F.gelu(flat[rows] @ self.w1[e]) @ self.w2[e]) * weights[rows, slot, None])
        return out.reshape(x.shape)


MLPS.register("routed_test", RoutedMLP)
'''


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    return active_plugin(tmp_path_factory.mktemp("plugin"), "routed", ROUTED)


SHAPE = {"n_layer": 2, "n_head": 2, "d_model": 32, "vocab_size": 64, "block_size": 64}


def test_a_routed_model_is_counted_on_the_cpu_and_a_built_in_one_on_meta(routed):
    assert next(countable_model(ModelConfig(**SHAPE)).parameters()).device.type == "meta"
    assert next(countable_model(ModelConfig(**SHAPE, mlp="routed_test")).parameters()).device.type == "cpu"


def test_routed_flops_are_those_of_the_experts_a_token_runs_plus_the_router(routed):
    """Independent reference: each token runs TOP_K experts of WIDTH units, the matmuls of a dense
    MLP of width TOP_K x WIDTH (counted on meta), plus the router's d x EXPERTS product, forward
    and backward (x 3), in every layer. The closed form counts all EXPERTS experts."""
    seq = 48
    counted = measured_flops_per_token(countable_model(ModelConfig(**SHAPE, mlp="routed_test")), seq)
    dense = measured_flops_per_token(countable_model(ModelConfig(**SHAPE, d_ff=TOP_K * WIDTH)), seq)
    assert counted == dense + SHAPE["n_layer"] * 3 * 2 * SHAPE["d_model"] * EXPERTS


def test_routed_activations_are_what_a_training_step_keeps(routed):
    """Traced on one and two sequences and extrapolated to the batch: what autograd keeps for the
    whole batch on the CPU, to the byte (routing other tokens moves rows between experts, not
    bytes)."""
    cfg = ModelConfig(**SHAPE, mlp="routed_test")
    torch.manual_seed(0)
    _, activations = kept_for_backward(build_model(cfg), torch.randint(0, 64, (6, 64)))
    assert traced_activation_bytes(countable_model(cfg), 6, 64) == activations


def test_info_and_a_sweeps_flop_count_take_a_routed_plugin(tmp_path, text_corpus, routed):
    config = plugin_toml(tmp_path, text_corpus, routed, section="")
    config.write_text(config.read_text().replace("[model]\n", '[model]\nmlp = "routed_test"\n'))
    info = slmlab("info", str(config))
    assert info.returncode == 0, info.stderr
    assert "counted by torch.utils.flop_counter" in info.stdout and "training memory: total" in info.stdout
    assert flops_per_token(load_config(config)) > 0  # what a sweep's train-FLOPs column and FLOP budgets use
