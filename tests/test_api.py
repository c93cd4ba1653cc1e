"""The Python entry points `import slmlab` offers (slmlab/__init__.py): each resolves to the
object it names, lazily (importing slmlab alone imports no torch), and together they train,
read back, sample from and look inside a run."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import slmlab


def test_every_entry_point_is_the_object_it_names_and_none_needs_torch_to_import_slmlab():
    for name, module in slmlab.API.items():
        assert getattr(slmlab, name) is getattr(importlib.import_module(module), name)
    assert set(slmlab.API) <= set(dir(slmlab)) and set(slmlab.__all__) == {"__version__", *slmlab.API}
    with pytest.raises(AttributeError, match="module 'slmlab' has no attribute 'trian'"):
        slmlab.trian  # noqa: B018
    code = "import sys, slmlab; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_docstrings_session_trains_reads_back_samples_and_caches(micro_toml):
    cfg = slmlab.load_config(micro_toml, {"train.steps": 4, "name": "api"})
    result = slmlab.train(cfg, progress=False)
    cfg, model, tokenizer = slmlab.load_run(result.run_dir)
    ids = model.generate(torch.tensor([tokenizer.encode("ab")]), 5, temperature=0)
    assert ids.shape == (1, 7)
    logits, cache = slmlab.run_with_cache(model, ids, names=lambda name: name.endswith("hook_z"))
    assert logits.shape == (1, 7, cfg.model.vocab_size) and len(cache) == cfg.model.n_layer
    ablated = slmlab.run_with_hooks(model, ids, [("blocks.0.hook_attn_out", lambda out, name: out * 0)])
    assert ablated.shape == logits.shape and not torch.allclose(ablated, logits)
    fresh = slmlab.build_model(cfg.model)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "fields, message",
    [  # each used to fail inside torch (TypeError, RuntimeError) or build a meaningless model in silence
        ({"n_layer": 2.5}, "model.n_layer: expected int, got float 2.5"),
        ({"d_ff": True}, "model.d_ff: expected int, got bool True"),
        ({"arch": []}, r"model.arch: expected str, got list \[\]"),
        ({"norm_eps": float("nan")}, "model.norm_eps must be a finite number, got nan"),  # a NaN loss
        ({"smat": {"use_S": True, "s_dim": 0}}, "model.smat.s_dim must be > 0, got 0"),  # S of no dimension
        ({"smat": {"use_G": True, "s_dim": -1}}, "model.smat.s_dim must be > 0, got -1"),
        ({"smat": {"use_S": True, "s_dim": 10**13}}, "model.smat.s_dim = 10000000000000, model.n_layer = 1 make over"),
        ({"self_area": {"enabled": True, "hidden": -1}}, "model.self_area.self_dim must be > 0 and hidden >= 0"),
        ({"self_area": {"enabled": True, "self_dim": 10**30}}, "model.self_area.self_dim = 10+ is too large: give a whole"),
        ({"arch": "tape", "tape": {"n_critics": -1}}, "model.tape.n_critics must be > 0, got -1"),
        ({"arch": "tape", "tape": {"n_critics": 10**11}}, "model.tape.n_critics = 100000000000, coda_layers = 2, .* make over"),
    ],
)
def test_build_model_checks_a_config_made_in_code_as_a_loaded_one(fields, message):
    """A ModelConfig made in code skipped the loader's checks: its values' types and the variants'
    section rules. build_model now applies both before any builder reads the config."""
    from slmlab.config import build_dataclass

    base = {"vocab_size": 40, "n_layer": 1, "n_head": 2, "d_model": 16, "block_size": 16}
    sections = {
        name: build_dataclass(slmlab.ModelConfig.SECTIONS[name].config, value)
        for name, value in fields.items()
        if isinstance(value, dict)
    }
    cfg = slmlab.ModelConfig(**{**base, **{k: v for k, v in fields.items() if not isinstance(v, dict)}}, **sections)
    with pytest.raises(slmlab.ConfigError, match=message.replace("+", r"\d+")) as info:
        slmlab.build_model(cfg)
    assert "\n" not in str(info.value)
    if sections:  # the same rules hold for a loaded config
        with pytest.raises(slmlab.ConfigError, match=message.replace("+", r"\d+")):
            slmlab.config_from_dict({"model": {**base, **fields}})


def test_a_run_is_named_by_a_path_as_str_or_path_and_anything_else_is_one_line(micro_toml):
    """load_run(5) raised TypeError from inside pathlib; RunDir("runs/x") held a str, and its
    files (path / "config.json") raised TypeError when first read."""
    for given in (5, None, ["runs/x"]):
        with pytest.raises(slmlab.ConfigError, match=f"a run directory is a path, got {type(given).__name__} "):
            slmlab.load_run(given)
    assert slmlab.RunDir("runs/x").config == slmlab.RunDir(Path("runs/x")).config


def test_overrides_are_a_dict_or_command_line_words_and_a_string_is_one_line(micro_toml):
    """load_config(path, "--model.n_layer 2") read the string a character at a time and said it
    expected an override like --model.n_layer 4, got '-'."""
    assert slmlab.load_config(micro_toml, ["--model.n_layer", "2"]).model.n_layer == 2
    assert slmlab.load_config(micro_toml, {"model.n_layer": 3}).model.n_layer == 3
    assert slmlab.load_config(micro_toml, None).model.n_layer == 1
    for given in ("--model.n_layer 2", 5):
        with pytest.raises(slmlab.ConfigError, match=f"^overrides are a dict .* got {type(given).__name__} "):
            slmlab.load_config(micro_toml, given)
