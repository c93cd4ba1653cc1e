"""The MoE worked example (examples/plugins/moe.py): its run and sweep configs pass `slmlab check`,
and it trains with its load-balancing and z-loss terms logged as aux_loss.

Its forward reads values, as token routing does (each expert's tokens found with `nonzero`), so it
cannot run on the meta device where slmlab counts FLOPs and memory: `slmlab info`, the report
card and a sweep's train-FLOPs column ended in a traceback (after every run of the sweep had
trained). Such a model is now built on the CPU and counted running, and the counts hold against
independent references."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from slmlab import load_config, train
from slmlab.cli.main import main
from slmlab.config import ModelConfig
from slmlab.experiments.budget import flops_per_token
from slmlab.model import build_model
from slmlab.model.accounting import countable_model, measured_flops_per_token, traced_activation_bytes
from slmlab.plugins import activate
from tests.test_memory import kept_for_backward
from tests.test_plugins import plugin_toml, slmlab

MOE = Path(__file__).parents[1] / "examples" / "plugins" / "moe.py"  # top-2 of 4 experts, routed with nonzero
TOP_K, EXPERTS = 2, 4


@pytest.fixture(scope="module")
def routed():
    activate([str(MOE.resolve())])
    return MOE


SHAPE = {"n_layer": 2, "n_head": 2, "d_model": 32, "d_ff": 128, "vocab_size": 64, "block_size": 64}


def moe_toml(tmp_path, corpus) -> Path:
    """The micro run config (d_ff 64: 4 experts of 16) with the example's MLP."""
    config = plugin_toml(tmp_path, corpus, MOE, section="[model.moe]\nexperts = 4\ntop_k = 2\n")
    config.write_text(config.read_text().replace("[model]\n", '[model]\nmlp = "moe"\n'))
    return config


def test_a_routed_model_is_counted_on_the_cpu_and_a_built_in_one_on_meta(routed):
    assert next(countable_model(ModelConfig(**SHAPE)).parameters()).device.type == "meta"
    assert next(countable_model(ModelConfig(**SHAPE, mlp="moe")).parameters()).device.type == "cpu"


def test_routed_flops_are_those_of_the_experts_a_token_runs_plus_the_router(routed):
    """Independent reference: each token runs TOP_K of the EXPERTS experts of width d_ff / EXPERTS,
    the products of a dense MLP of width TOP_K d_ff / EXPERTS (counted on meta), plus the router's
    d x EXPERTS product, forward and backward (x 3), in every layer. The closed form counts all
    EXPERTS experts."""
    seq = 48
    counted = measured_flops_per_token(countable_model(ModelConfig(**SHAPE, mlp="moe")), seq)
    dense = measured_flops_per_token(countable_model(ModelConfig(**{**SHAPE, "d_ff": TOP_K * SHAPE["d_ff"] // EXPERTS})), seq)
    assert counted == dense + SHAPE["n_layer"] * 3 * 2 * SHAPE["d_model"] * EXPERTS


def test_routed_activations_are_what_a_training_step_keeps(routed):
    """Traced on one and two sequences and extrapolated to the batch: what autograd keeps for the
    whole batch on the CPU, to the byte (routing other tokens moves rows between experts, not
    bytes)."""
    cfg = ModelConfig(**SHAPE, mlp="moe")
    torch.manual_seed(0)
    _, activations = kept_for_backward(build_model(cfg), torch.randint(0, 64, (6, 64)))
    assert traced_activation_bytes(countable_model(cfg), 6, 64) == activations


@pytest.mark.slow
def test_info_and_a_sweeps_flop_count_take_a_routed_plugin(tmp_path, text_corpus, routed):
    config = moe_toml(tmp_path, text_corpus)
    info = slmlab("info", str(config))
    assert info.returncode == 0, info.stderr
    assert "counted by torch.utils.flop_counter" in info.stdout and "training memory: total" in info.stdout
    assert flops_per_token(load_config(config)) > 0  # what a sweep's train-FLOPs column and FLOP budgets use


@pytest.mark.slow
def test_the_moe_example_passes_check(capsys):
    assert main(["check", str(MOE.with_name("moe_sweep.toml"))]) == 0
    assert "24/24 properties hold" in capsys.readouterr().out


def test_the_moe_example_trains_with_its_auxiliary_terms(tmp_path, text_corpus):
    run = train(load_config(moe_toml(tmp_path, text_corpus)), progress=False).run_dir
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["aux_loss"]) and r["aux_loss"] > 0 for r in records)
    assert math.isfinite(records[-1]["val_loss"])
