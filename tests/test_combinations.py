"""The built-in ideas combined: any mix of positions, norms, MLPs, heads, attention patterns, SMAT's
bias and gate and the Self Area (or a TapeTransformer of any rules) passes every property of
`slmlab check`, and is held to a naive float64 reference of the whole model, not only of its parts.

The named configs are checked one by one elsewhere (test_check.py); here hypothesis draws the
combinations nobody wrote a config for (SMAT under block-local attention had no reference at all)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from slmlab.analysis.conformance import run_checks
from slmlab.config import config_from_dict

BACKBONE = {
    "n_layer": st.sampled_from([1, 2]),
    "n_head": st.sampled_from([1, 2, 4]),
    "norm": st.sampled_from(["layernorm", "rmsnorm"]),
    "pos": st.sampled_from(["learned", "sinusoidal", "rope"]),
    "rope_fraction": st.sampled_from([1.0, 0.5]),
    "rope_scale": st.sampled_from([1.0, 2.0]),
    "bias": st.booleans(),
    "tie_embeddings": st.booleans(),
    "head": st.sampled_from(["linear", "student_t"]),
    "dropout": st.sampled_from([0.0, 0.1]),  # check compares in eval mode, and trains with it
}
DECODER = {
    "arch": st.just("decoder"),
    "mlp": st.sampled_from(["gelu", "swiglu"]),
    "attention": st.sampled_from(["full", "block_local", "per layer"]),
    "local_block": st.sampled_from([4, 8]),
    "global_every": st.sampled_from([0, 2]),
    "smat": st.fixed_dictionaries(
        {
            "use_S": st.booleans(),
            "use_G": st.booleans(),
            "s_dim": st.sampled_from([4, 8]),
            "centrality_norm": st.sampled_from(["prefix", "seq"]),
            "gate_per_head": st.booleans(),
            "mu_init": st.sampled_from([0.0, 0.5]),
        }
    ),
    "self_area": st.fixed_dictionaries(
        {
            "enabled": st.booleans(),
            "self_dim": st.just(8),
            "hidden": st.sampled_from([0, 12]),
            "surgery_safe": st.booleans(),
            "guidance_mode": st.sampled_from(["every_layer", "input_once"]),
            "target": st.sampled_from(["residual", "sublayer_inputs"]),
            "token_dependent": st.booleans(),
        }
    ),
}
RULES = st.sampled_from(["soft_xor", "softmax_mix", "sum"])
TAPE = {
    "arch": st.just("tape"),
    "tape": st.fixed_dictionaries(
        {
            "n_critics": st.sampled_from([1, 2]),
            "coda_rule": RULES,
            "critic_rule": RULES,
            "moderator": st.sampled_from(["merge", "last"]),
            "rnn_dim": st.sampled_from([0, 8]),
        }
    ),
}


def _settings_it_reads(model: dict) -> dict:
    """Leave out what the drawn model would not read (slmlab refuses settings it ignores)."""
    if model["pos"] != "rope":
        model.pop("rope_fraction"), model.pop("rope_scale")
    if model["arch"] == "tape":
        return model
    if model["attention"] == "per layer":  # model.attention_layers: block-local first, then full
        model["attention_layers"] = ["block_local", "full"][: model["n_layer"]]
        model.pop("attention"), model.pop("global_every")
    elif model["attention"] != "block_local":
        model.pop("local_block"), model.pop("global_every")
    smat = model["smat"]
    if not (smat["use_S"] or smat["use_G"]):
        del model["smat"]
    elif not smat["use_G"]:
        for gate_setting in ("centrality_norm", "gate_per_head", "mu_init"):
            del smat[gate_setting]
    if not model["self_area"]["enabled"]:
        del model["self_area"]
    return model


MODELS = st.one_of(st.fixed_dictionaries({**BACKBONE, **DECODER}), st.fixed_dictionaries({**BACKBONE, **TAPE})).map(
    _settings_it_reads
)


SMAT_UNDER_BLOCK_LOCAL = {
    **{"arch": "decoder", "n_layer": 2, "n_head": 2, "norm": "rmsnorm", "mlp": "swiglu", "pos": "rope", "head": "linear"},
    **{"attention": "block_local", "local_block": 4, "smat": {"use_S": True, "use_G": True, "gate_per_head": True}},
    "self_area": {"enabled": True, "self_dim": 8, "target": "sublayer_inputs", "token_dependent": True},
}


@pytest.mark.slow
@given(model=MODELS)
@example(model=SMAT_UNDER_BLOCK_LOCAL)
@settings(max_examples=14, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
def test_any_combination_of_built_in_ideas_passes_check_against_a_naive_reference(model, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "text.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 20)
    cfg = config_from_dict({"name": "mix", "model": model, "data": {"source": str(corpus), "tokenizer": "char"}})
    results = {o.name: o.result for o in run_checks(cfg)[1]}
    failed = {name: result.reason for name, result in results.items() if result.passed is False}
    assert not failed, (model, failed)
    naive = results["naive reference (float64)"]
    assert naive.passed is True and "whole model" in naive.figure, (model, naive.figure)
