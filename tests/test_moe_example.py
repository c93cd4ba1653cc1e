"""The MoE worked example (examples/plugins/moe.py): its run and sweep configs pass `slmlab check`,
it trains with its load-balancing and z-loss terms logged as aux_loss, and `slmlab info` counts
the FLOPs of the experts a token runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from slmlab import load_config, train
from slmlab.cli.main import main
from slmlab.config import ModelConfig
from slmlab.model.accounting import countable_model, measured_flops_per_token
from slmlab.plugins import activate
from tests.test_plugins import plugin_toml

EXAMPLES = Path(__file__).parents[1] / "examples" / "plugins"


def test_the_moe_example_passes_check(capsys):
    assert main(["check", str(EXAMPLES / "moe_sweep.toml")]) == 0
    assert "24/24 properties hold" in capsys.readouterr().out


def test_the_moe_example_trains_with_its_auxiliary_terms(tmp_path, text_corpus):
    config = plugin_toml(tmp_path, text_corpus, EXAMPLES / "moe.py", section="[model.moe]\nexperts = 4\ntop_k = 2\n")
    config.write_text(config.read_text().replace("[model]\n", '[model]\nmlp = "moe"\n'))
    run = train(load_config(config), progress=False).run_dir
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["aux_loss"]) and r["aux_loss"] > 0 for r in records)
    assert math.isfinite(records[-1]["val_loss"])


def test_the_moe_examples_flops_are_the_experts_a_token_runs():
    """Top-2 of 4 experts of width d_ff / 4: the dense MLP's products at half its width, plus the
    router's d x 4, forward and backward, in every layer."""
    shape = {"n_layer": 2, "n_head": 2, "d_model": 32, "d_ff": 128, "vocab_size": 64, "block_size": 64}
    activate([str((EXAMPLES / "moe.py").resolve())])
    moe = measured_flops_per_token(countable_model(ModelConfig(**shape, mlp="moe")), 48)
    dense = measured_flops_per_token(countable_model(ModelConfig(**{**shape, "d_ff": 64})), 48)
    assert moe == dense + 2 * 3 * 2 * 32 * 4
