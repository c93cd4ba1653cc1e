"""Auxiliary losses (model/auxiliary.py): a module's `auxiliary_loss()` term joins the objective
that training, `slmlab check` and `diagnose` backpropagate, is logged as `aux_loss`, and never
enters the loss a model is scored by."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from slmlab import load_config, train
from slmlab.cli.main import main
from tests.test_plugins import active_plugin, plugin_toml

PENALISED = '''
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn
from slmlab.registry import MLPS, register_section


@dataclass
class PenalisedConfig:
    coefficient: float = 1.0


class Penalised(nn.Module):
    """A GELU MLP whose auxiliary term is c * s * mean(W_1^2): weight decay on W_1 through the
    objective, and s a parameter only that term trains."""

    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.ff_dim)
        self.proj = nn.Linear(cfg.ff_dim, cfg.d_model)
        self.proj.residual_projection = True
        self.strength = nn.Parameter(torch.ones(()))
        self.coefficient = cfg.penalised_test.coefficient
        self.term = None

    def forward(self, x):
        self.term = self.coefficient * self.strength * self.fc.weight.pow(2).mean()
        return self.proj(F.gelu(self.fc(x)))

    def auxiliary_loss(self):
        return self.term


MLPS.register("penalised_test", Penalised)
register_section("penalised_test", PenalisedConfig, chosen_by="model.mlp")
'''


@pytest.fixture(scope="module")
def penalised(tmp_path_factory):
    return active_plugin(tmp_path_factory.mktemp("plugin"), "penalised", PENALISED)


def config_with(tmp_path, corpus, plugin, coefficient: float):
    config = plugin_toml(tmp_path, corpus, plugin, section=f"[model.penalised_test]\ncoefficient = {coefficient}\n")
    config.write_text(config.read_text().replace("[model]\n", '[model]\nmlp = "penalised_test"\n'))
    return config


def test_training_backpropagates_the_auxiliary_term_logs_it_and_scores_without_it(tmp_path, text_corpus, penalised):
    runs = {}
    for coefficient in (0.0, 200.0):
        cfg = load_config(config_with(tmp_path, text_corpus, penalised, coefficient), {"name": f"c{coefficient:g}"})
        runs[coefficient] = train(cfg, progress=False).run_dir
    records = {c: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for c, run in runs.items()}
    weights = {c: load_file(run / "final.safetensors") for c, run in runs.items()}
    fc = next(name for name in weights[0.0] if name.endswith("mlp.fc.weight"))
    strength = next(name for name in weights[0.0] if name.endswith("mlp.strength"))
    # the term trained: it shrank W_1 and moved s, which nothing else reaches
    assert weights[200.0][fc].pow(2).mean() < 0.8 * weights[0.0][fc].pow(2).mean()
    assert weights[200.0][strength].item() < 1.0 and weights[0.0][strength].item() == 1.0
    aux = [r["aux_loss"] for r in records[200.0]]
    assert all(math.isfinite(a) and a > 0 for a in aux) and aux[-1] < aux[0]
    assert all(r["aux_loss"] == 0.0 for r in records[0.0])
    # logged and scored losses are the language model's alone: the first ones are ~ln V, not ln V + the term
    first = records[200.0][0]
    assert abs(first["loss"] - records[0.0][0]["loss"]) < 0.05 < aux[0]
    summary = json.loads((runs[200.0] / "summary.json").read_text())
    assert summary["val_loss"] == pytest.approx([r for r in records[200.0] if "val_loss" in r][-1]["val_loss"])


@pytest.mark.slow
def test_check_counts_a_gradient_the_auxiliary_term_alone_gives(tmp_path, text_corpus, penalised, capsys):
    """s gets its gradient from the auxiliary term only: the gradients property reaches it through
    the objective (with the term off, nothing does, and the property names s)."""
    assert main(["check", str(config_with(tmp_path, text_corpus, penalised, 1.0))]) == 0
    capsys.readouterr()
    assert main(["check", str(config_with(tmp_path, text_corpus, penalised, 0.0))]) == 1
    err = capsys.readouterr().err
    assert "FAIL gradients: no gradient reaches" in err and "mlp.strength" in err


def test_a_model_without_auxiliary_terms_trains_on_its_loss_alone(tmp_path, micro_toml):
    from slmlab.model import build_model
    from slmlab.model.auxiliary import auxiliary_modules, objective

    cfg = load_config(micro_toml)
    cfg.model.vocab_size = 50
    model = build_model(cfg.model)
    loss = torch.tensor(2.5)
    assert auxiliary_modules(model) == [] and objective(model, loss) is loss


@pytest.mark.parametrize(
    ("term", "said"),
    [
        (torch.ones(3), r"a tensor of shape \(3,\) \(torch.float32\)"),
        (0.5, "0.5"),
        (torch.tensor(1), r"a tensor of shape \(\) \(torch.int64\)"),
    ],
)
def test_a_term_that_is_not_a_0_dim_floating_tensor_is_one_line(term, said):
    """A vector was summed in silence (a per-token loss counted at its batch's size); a float failed
    deep in torch.stack."""
    from torch import nn

    from slmlab.config import ConfigError
    from slmlab.model.auxiliary import auxiliary_loss

    class Odd(nn.Module):
        def auxiliary_loss(self):
            return term

    with pytest.raises(ConfigError, match=rf"Odd.auxiliary_loss\(\) gave {said}: give a 0-dim floating tensor"):
        auxiliary_loss([Odd()])
